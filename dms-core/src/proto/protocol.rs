//! [`Protocol`]: all sessions of one local instance, and its pending requests.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use foldhash::fast::RandomState;

use super::control::{
    Body, CommandCode, Control, ControlError, Reason, Route, capabilities, codes, flags,
};
use super::session::{Session, SessionState};
use crate::acl::{AccessControl, AclPolicy, Operation, Operations};
use crate::path::ServicePath;
use crate::trace::TraceContext;
use crate::{Multipart, PeerId, Role};

/// Shortest liveness timeout a requester may ask a responder to apply.
const MIN_LIVENESS: Duration = Duration::from_millis(50);
/// Longest liveness timeout a requester may ask for.
const MAX_LIVENESS: Duration = Duration::from_secs(600);
/// Request timeout used when the one asked for overflows the clock (about a year).
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Settings of a [`Protocol`].
#[derive(Clone)]
pub struct ProtoConfig {
    /// Our service path, announced in READY.
    pub local: ServicePath,
    /// As requester: time between PINGs.
    pub ping_interval: Duration,
    /// As requester: PINGs without any answer before the peer is declared dead. The
    /// detection bound is `ping_interval × missed_pongs`; READY asks the responder to apply
    /// the same bound to us.
    pub missed_pongs: u32,
    /// Time a READY probe has to be answered.
    pub ready_timeout: Duration,
    /// Requests waiting for a reply, at most (`request` fails beyond).
    pub max_pending: usize,
    /// The access-control policy (`None`: no policy, every peer may do everything).
    ///
    /// With a policy, `connect` is checked when a requester's READY arrives (refused:
    /// DISCONNECT `ACCESS_DENIED`); `request`, `notify` and `broadcast` are checked on
    /// every REQ (a denied request is answered with a REP error `ACCESS_DENIED`, a denied
    /// notification or broadcast is dropped); every refusal is counted in
    /// [`ProtoStats`]. A routed REQ (docs/PROTOCOL.md §3.5) is also checked for
    /// `forward`: the adjacent peer must be allowed it when it relays for another origin,
    /// and the origin must be allowed it where the request is forwarded on; the operation
    /// itself is checked against the origin where the request arrives.
    pub acl: Option<AclPolicy>,
    /// The application's decision hook ([`AccessControl`]), asked besides `acl`: an
    /// operation goes ahead only when both allow it (`None`: only `acl` decides). The
    /// checks are those of `acl`, but where a session keeps the policy's answer from
    /// READY, the hook is asked again on every REQ (for the adjacent peer, and for the
    /// origin of a routed one), so a hook whose answers change applies them to the next
    /// message. Refusals are answered and counted as the policy's are.
    pub access_control: Option<Arc<dyn AccessControl>>,
    /// This instance forwards routed messages for others (a broker): READY announces
    /// [`FORWARDS`](capabilities::FORWARDS), and a routed REQ for another instance comes
    /// out as [`Event::Forward`]. Without it such a REQ is answered `UNREACHABLE` (a
    /// notification is dropped and counted).
    pub forwards: bool,
    /// The budget of DMS PINGs each peer may send us.
    pub ping_limit: PingLimit,
}

/// The PINGs a peer may send: a token bucket per session, and a flood bound.
///
/// Each session's rate is raised to twice that of a requester asking its liveness bound
/// (see `docs/PROTOCOL.md` §5), so faster heartbeats than this node's own are never
/// throttled.
///
/// A PING within the budget is answered with PONG; one beyond it is not answered and is
/// counted ([`ProtoStats::pings_dropped`]); a peer that sends `flood` PINGs beyond the
/// budget within one `flood_window` is disconnected (DISCONNECT `RATE_LIMITED`): the link
/// pays for its flood, not the process.
///
/// ```
/// use dms_core::proto::PingLimit;
/// let limit = PingLimit::default();
/// assert_eq!((limit.burst, limit.per_second, limit.flood), (20, 10, 100));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingLimit {
    /// PINGs that may come back to back (the bucket's size).
    pub burst: u32,
    /// PINGs per second the bucket refills with (the sustained rate).
    pub per_second: u32,
    /// PINGs beyond the budget within `flood_window` that end the session.
    pub flood: u32,
    /// The window `flood` is counted in.
    pub flood_window: Duration,
}

impl Default for PingLimit {
    /// A burst of 20, 10 per second, disconnected at 100 over budget within 1 s.
    fn default() -> Self {
        Self {
            burst: 20,
            per_second: 10,
            flood: 100,
            flood_window: Duration::from_secs(1),
        }
    }
}

/// PINGs per liveness bound a requester sends by default (`missed_pongs`): a session's
/// PING budget is at least twice that rate for the bound its peer asked for.
const PINGS_PER_BOUND: u64 = 3;

/// The PING budget of a session whose liveness bound is `liveness`: `limit`, raised to
/// twice the rate of a requester that asked for that bound and PINGs
/// [`PINGS_PER_BOUND`] times within it, so a peer whose heartbeat is faster than this
/// node's own is never throttled. Bounded: the bound is at least 50 ms (120 PINGs/s).
/// Returns (PINGs per second, burst).
fn session_budget(limit: &PingLimit, liveness: Duration) -> (u64, u64) {
    let millis = u64::try_from(liveness.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let asked = (2 * PINGS_PER_BOUND * 1000).div_ceil(millis);
    let per_second = u64::from(limit.per_second).max(asked);
    (per_second, u64::from(limit.burst).max(2 * per_second))
}

/// One PING's worth of tokens (tokens are counted in millionths of a PING).
const PING_COST: u64 = 1_000_000;

impl std::fmt::Debug for ProtoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtoConfig")
            .field("local", &self.local)
            .field("ping_interval", &self.ping_interval)
            .field("missed_pongs", &self.missed_pongs)
            .field("ready_timeout", &self.ready_timeout)
            .field("max_pending", &self.max_pending)
            .field("acl", &self.acl)
            .field(
                "access_control",
                &self.access_control.as_ref().map(|_| "<hook>"),
            )
            .field("forwards", &self.forwards)
            .field("ping_limit", &self.ping_limit)
            .finish()
    }
}

impl ProtoConfig {
    /// Defaults: PING every second, dead after 3 missed, READY within 2 s, 65,536 pending
    /// requests, no ACL, the default [`PingLimit`].
    pub fn new(local: ServicePath) -> Self {
        Self {
            local,
            ping_interval: Duration::from_secs(1),
            missed_pongs: 3,
            ready_timeout: Duration::from_secs(2),
            max_pending: 65_536,
            acl: None,
            access_control: None,
            ping_limit: PingLimit::default(),
            forwards: false,
        }
    }

    /// Silence after which a peer is dead: `ping_interval × missed_pongs`.
    pub fn detection_bound(&self) -> Duration {
        self.ping_interval.saturating_mul(self.missed_pongs.max(1))
    }
}

/// Identifies a request among this instance's pending ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

impl RequestId {
    /// The bit that marks an *external* request: one the embedder wrote to the link
    /// itself ([`request_message`]), not through [`Protocol::request`]. The protocol
    /// never hands out such ids; the replies to them come as [`Event::ExternalReply`],
    /// and the embedder keeps their deadlines.
    pub const EXTERNAL: u64 = 1 << 63;

    /// Whether this id is an external request's (see [`EXTERNAL`](Self::EXTERNAL)).
    pub fn is_external(self) -> bool {
        self.0 & Self::EXTERNAL != 0
    }
}

/// A message to hand to the middleware: `msg[0]` names the adjacent peer `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Transmit {
    /// The adjacent peer.
    pub to: PeerId,
    /// `[peer id, control, payload...]`.
    pub msg: Multipart,
    /// A heartbeat (PING or PONG): send it with
    /// [`try_send_urgent`](crate::MessageMiddleware::try_send_urgent), ahead of queued
    /// data, so that a deep queue does not look like a dead peer.
    pub urgent: bool,
}

/// Who ended a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiator {
    /// We did.
    Local,
    /// The peer did.
    Remote,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LossReason {
    /// A DISCONNECT was sent or received.
    #[error("disconnected by the {} side: {} (code {})", if *.initiator == Initiator::Local { "local" } else { "remote" }, .reason.detail, .reason.code)]
    Disconnected {
        /// Who sent it.
        initiator: Initiator,
        /// Its reason.
        reason: Reason,
    },
    /// Nothing heard within the liveness bound.
    #[error("no sign of life for {silent_for:?}")]
    HeartbeatTimeout {
        /// How long the peer was silent.
        silent_for: Duration,
    },
    /// The READY probe was not answered in time.
    #[error("READY probe not answered in time")]
    ProbeTimeout,
    /// The link went down.
    #[error("link down")]
    LinkDown,
    /// The peer broke the protocol.
    #[error("protocol violation: {0}")]
    ProtocolViolation(String),
}

/// Why a request got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// No reply within the request's timeout.
    #[error("no reply within the timeout")]
    Timeout,
    /// The session with the peer ended before the reply.
    #[error("peer lost before replying: {0}")]
    PeerLost(LossReason),
    /// The peer answered with an error.
    #[error("peer replied with error {}: {}", .0.code, .0.detail)]
    Remote(Reason),
    /// The peer's ACL refused the request (a REP error `ACCESS_DENIED`).
    #[error("access denied: {op} to {service}")]
    Denied {
        /// The service that refused it (the peer).
        service: ServicePath,
        /// The operation refused (read from the reply's detail; `request` if it names
        /// none).
        op: Operation,
        /// The refusal's detail as the peer sent it (control characters replaced): for a
        /// routed request, it names the origin and the instance that refused.
        detail: String,
    },
    /// The request was never sent: the middleware could not take its REQ (the link and
    /// the caller's backlog for it were full). Reported through
    /// [`Protocol::fail_unsent`].
    #[error("not sent: {0}")]
    NotSent(String),
}

/// An application command that cannot be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// No ready session with that peer.
    #[error("no ready session with {0}")]
    NotReady(PeerId),
    /// The pending-request table is full.
    #[error("{max} requests are already pending")]
    TooManyPending {
        /// The bound.
        max: usize,
    },
}

/// What the protocol reports to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A session completed its READY exchange: the peer is usable.
    PeerReady {
        /// The peer.
        peer: PeerId,
        /// Its service path.
        path: ServicePath,
        /// Whether we connected (requester) or it did.
        role: Role,
    },
    /// A session ended; its pending requests failed. The link should be closed.
    PeerLost {
        /// The peer.
        peer: PeerId,
        /// Its service path, if READY told us.
        path: Option<ServicePath>,
        /// Why.
        reason: LossReason,
    },
    /// A request that expects a reply: answer with [`Protocol::reply`].
    Request {
        /// The adjacent peer.
        peer: PeerId,
        /// The requester's service path.
        from: ServicePath,
        /// Id to reply to.
        id: RequestId,
        /// The payload frames.
        body: Multipart,
        /// The requester's trace context (docs/PROTOCOL.md §3.4), if it sent a valid one.
        trace: Option<TraceContext>,
    },
    /// A routed REQ for another instance, at an instance that forwards
    /// ([`ProtoConfig::forwards`]) and whose ACL lets it through: send it on with
    /// [`Protocol::forward`] and, if it expects a reply, answer `id` with
    /// [`Protocol::reply`] once the next hop's reply comes (or with an error).
    Forward {
        /// The adjacent peer it came from.
        peer: PeerId,
        /// Id to reply to (meaningful when it expects a reply).
        id: RequestId,
        /// The message, with the hop limit it arrived with.
        message: Routed,
    },
    /// A one-way message.
    Notification {
        /// The adjacent peer.
        peer: PeerId,
        /// The sender's service path.
        from: ServicePath,
        /// Sent to every instance of our cluster.
        broadcast: bool,
        /// The payload frames.
        body: Multipart,
    },
    /// The outcome of one of our requests.
    Reply {
        /// The request.
        id: RequestId,
        /// The reply's payload, or why there is none.
        result: Result<Multipart, RequestError>,
    },
    /// A reply from `peer` to an external request (see [`RequestId::EXTERNAL`]): the
    /// protocol does not know it, the embedder matches it (and counts it with
    /// [`Protocol::count_late_reply`] if it is not waited for any more).
    ExternalReply {
        /// The adjacent peer it came from.
        peer: PeerId,
        /// The request.
        id: RequestId,
        /// The reply's payload, or why there is none.
        result: Result<Multipart, RequestError>,
    },
}

/// A routed REQ (docs/PROTOCOL.md §3.5), as [`Protocol::forward`] sends it and
/// [`Event::Forward`] hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// Flag bits: `EXPECT_REPLY`, `BROADCAST`.
    pub flags: u8,
    /// Origin and destination.
    pub route: Route,
    /// Links it may still cross (see [`forward_hop_limit`](crate::route::forward_hop_limit)).
    pub hop_limit: u8,
    /// The payload frames.
    pub body: Multipart,
    /// Its trace context.
    pub trace: Option<TraceContext>,
}

impl Routed {
    /// Whether the sender waits for a reply.
    pub fn expects_reply(&self) -> bool {
        self.flags & flags::EXPECT_REPLY != 0
    }
}

/// Counters of a [`Protocol`], as read by [`Protocol::stats`] or a [`StatsHandle`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProtoStats {
    /// Operations the ACL refused, all kinds: the sum of the three below.
    pub acl_denied: u64,
    /// Sessions refused at READY (`connect` denied).
    pub acl_denied_connects: u64,
    /// Requests refused (answered with `ACCESS_DENIED`).
    pub acl_denied_requests: u64,
    /// Notifications and broadcasts refused (dropped, never delivered).
    pub acl_denied_notifications: u64,
    /// PINGs beyond their peer's budget, not answered.
    pub pings_dropped: u64,
    /// Sessions ended for a PING flood.
    pub ping_floods: u64,
    /// Replies that came after their request had timed out.
    pub late_replies: u64,
    /// Timer ticks so late that this process cannot have been running (SIGSTOP, a VM
    /// pause, a starved runtime): silence measured across them was not held against
    /// peers (see [`Protocol::handle_timeout`]).
    pub pauses: u64,
    /// Messages ignored without ending their session (docs/PROTOCOL.md, "Malformed
    /// input"): a repeated READY, a PONG whose id matches no PING sent, a message from a
    /// peer with no session.
    pub ignored_messages: u64,
    /// Messages of a command that carries no payload (READY, PING, PONG, DISCONNECT, REP
    /// with ERROR) that came with payload frames: the command was handled, the frames
    /// dropped.
    pub ignored_payloads: u64,
    /// Routed REQs refused because the adjacent peer claimed another origin without
    /// announcing [`FORWARDS`](capabilities::FORWARDS) (a forged origin).
    pub forged_origins: u64,
    /// Routed REQs for another instance that reached an instance that does not forward.
    pub not_forwarded: u64,
}

#[derive(Debug, Default)]
struct Counters {
    acl_denied_connects: AtomicU64,
    acl_denied_requests: AtomicU64,
    acl_denied_notifications: AtomicU64,
    pings_dropped: AtomicU64,
    ping_floods: AtomicU64,
    late_replies: AtomicU64,
    pauses: AtomicU64,
    ignored_messages: AtomicU64,
    ignored_payloads: AtomicU64,
    forged_origins: AtomicU64,
    not_forwarded: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A handle on a [`Protocol`]'s counters that can be read from another task or thread
/// while the protocol runs (cheap to clone).
///
/// ```
/// use dms_core::proto::{ProtoConfig, Protocol};
/// let proto = Protocol::new(ProtoConfig::new("/demo/cn/android/w1/g1/Battle/battle-1".parse()?));
/// let stats = proto.stats_handle();
/// assert_eq!(stats.snapshot().acl_denied, 0);
/// # Ok::<(), dms_core::path::PathError>(())
/// ```
#[derive(Debug, Clone)]
pub struct StatsHandle(Arc<Counters>);

impl StatsHandle {
    /// The counters now.
    pub fn snapshot(&self) -> ProtoStats {
        let c = &self.0;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let connects = read(&c.acl_denied_connects);
        let requests = read(&c.acl_denied_requests);
        let notifications = read(&c.acl_denied_notifications);
        ProtoStats {
            acl_denied: connects
                .saturating_add(requests)
                .saturating_add(notifications),
            acl_denied_connects: connects,
            acl_denied_requests: requests,
            acl_denied_notifications: notifications,
            pings_dropped: read(&c.pings_dropped),
            ping_floods: read(&c.ping_floods),
            late_replies: read(&c.late_replies),
            pauses: read(&c.pauses),
            ignored_messages: read(&c.ignored_messages),
            ignored_payloads: read(&c.ignored_payloads),
            forged_origins: read(&c.forged_origins),
            not_forwarded: read(&c.not_forwarded),
        }
    }
}

#[derive(Debug)]
struct Pending {
    peer: PeerId,
    deadline: Instant,
}

/// All sessions of one local instance and its pending requests, sans IO.
///
/// Calling convention: after every `handle_*` input or application command, drain
/// [`poll_transmit`](Self::poll_transmit) (hand each to the middleware) and
/// [`poll_event`](Self::poll_event), then arm a timer for
/// [`poll_timeout`](Self::poll_timeout) and call [`handle_timeout`](Self::handle_timeout)
/// when it fires. Time is always passed in.
///
/// ```
/// use std::time::{Duration, Instant};
/// use dms_core::proto::{Event, ProtoConfig, Protocol};
/// use dms_core::{Multipart, Role};
///
/// let now = Instant::now();
/// let a_path = "/demo/cn/android/w1/g1/Lobby/lobby-1".parse().unwrap();
/// let b_path: dms_core::path::ServicePath = "/demo/cn/android/w1/g1/Battle/battle-1".parse().unwrap();
/// let mut a = Protocol::new(ProtoConfig::new(a_path));
/// let mut b = Protocol::new(ProtoConfig::new(b_path.clone()));
/// let a_id = a.config().local.peer_id();
/// // a connected to b: a is the requester and probes b with READY.
/// a.handle_link_up(now, b_path.peer_id(), Role::Connector);
/// b.handle_link_up(now, a_id.clone(), Role::Acceptor);
/// let probe = a.poll_transmit().unwrap();
/// b.handle_message(now, a_id.clone(), probe.msg);
/// let answer = b.poll_transmit().unwrap();
/// a.handle_message(now, b_path.peer_id(), answer.msg);
/// assert!(matches!(a.poll_event(), Some(Event::PeerReady { .. })));
/// let id = a.request(now, &b_path.peer_id(), Multipart::from_frames(["hi"]), Duration::from_secs(1)).unwrap();
/// # let _ = id;
/// ```
#[derive(Debug)]
pub struct Protocol {
    config: ProtoConfig,
    // foldhash, randomly seeded per process (as dms-link's registry): looked up on
    // every message, where SipHash cost more than the lookups themselves.
    sessions: HashMap<PeerId, Session, RandomState>,
    pending: HashMap<u64, Pending, RandomState>,
    deadlines: BTreeSet<(Instant, u64)>,
    next_id: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    local_hash: u64,
    counters: Arc<Counters>,
}

impl Protocol {
    /// A protocol instance with no session.
    pub fn new(config: ProtoConfig) -> Self {
        let local_hash = config.local.hash64();
        Self {
            config,
            sessions: HashMap::default(),
            pending: HashMap::default(),
            deadlines: BTreeSet::new(),
            next_id: 1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            local_hash,
            counters: Arc::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &ProtoConfig {
        &self.config
    }

    /// The state of the session with `peer`, if any.
    pub fn session_state(&self, peer: &PeerId) -> Option<SessionState> {
        self.sessions.get(peer).map(|s| s.state)
    }

    /// Requests sent to `peer` and not answered yet.
    pub fn pending_for(&self, peer: &PeerId) -> usize {
        self.sessions.get(peer).map_or(0, |s| s.pending)
    }

    /// All requests waiting for a reply.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Replies that came after their request had timed out.
    pub fn late_replies(&self) -> u64 {
        self.counters.late_replies.load(Ordering::Relaxed)
    }

    /// The counters: ACL refusals, PINGs over budget, late replies.
    pub fn stats(&self) -> ProtoStats {
        self.stats_handle().snapshot()
    }

    /// A handle to read the counters from elsewhere while the protocol runs.
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle(Arc::clone(&self.counters))
    }

    // ---- inputs -------------------------------------------------------------------------

    /// A link to `peer` is up. As `Connector` we are the requester: READY goes out now.
    pub fn handle_link_up(&mut self, now: Instant, peer: PeerId, role: Role) {
        if let Some(old) = self.sessions.remove(&peer) {
            self.lose(peer.clone(), old, LossReason::LinkDown);
        }
        let liveness = self.config.detection_bound();
        let session = Session {
            role,
            state: SessionState::AwaitingReady,
            path: None,
            last_heard: now,
            excused: false,
            liveness,
            ready_deadline: now + self.config.ready_timeout,
            next_ping: None,
            ping_seq: 0,
            pending: 0,
            permitted: Operations::NONE,
            forwards: false,
            ping_tokens: u64::from(self.config.ping_limit.burst).saturating_mul(PING_COST),
            ping_refilled: now,
            flood_window_start: now,
            flood_count: 0,
        };
        if role == Role::Connector {
            self.send_ready(
                &peer,
                u32::try_from(liveness.as_millis()).unwrap_or(u32::MAX),
            );
        }
        self.sessions.insert(peer, session);
    }

    /// The link to `peer` is gone.
    pub fn handle_link_down(&mut self, _now: Instant, peer: &PeerId) {
        if let Some(session) = self.sessions.remove(peer) {
            self.lose(peer.clone(), session, LossReason::LinkDown);
        }
    }

    /// A message from `peer`: `[peer id, control, payload...]` as the middleware gives it.
    /// Peer faults end the session (reported as `PeerLost`), never an `Err`; what each
    /// malformed input leads to is the table "Malformed input" of docs/PROTOCOL.md.
    pub fn handle_message(&mut self, now: Instant, peer: PeerId, msg: Multipart) {
        let Some(session) = self.sessions.get_mut(&peer) else {
            bump(&self.counters.ignored_messages);
            return;
        };
        session.last_heard = now;
        session.excused = false;
        let state = session.state;
        let permitted = session.permitted;
        let from = session.path.clone();
        let pings_sent = session.ping_seq;
        let control = match msg.frames().get(1).map(|frame| Control::decode(frame)) {
            Some(Ok(control)) => control,
            Some(Err(err)) => return self.violation(&peer, err),
            None => return self.violation(&peer, ControlError::Missing),
        };
        // The hook's answer is fresh for every REQ (the policy's is kept from READY).
        let permitted = match (&self.config.access_control, &from) {
            (Some(hook), Some(path)) if control.command == CommandCode::Req => {
                permitted.intersection(hook.permitted(path, &self.config.local))
            }
            _ => permitted,
        };
        let from = match (&control.route, from) {
            // A routed REQ (docs/PROTOCOL.md §3.5) is checked, and either handed on or
            // delivered as coming from its origin.
            (Some(_), Some(adjacent)) if state == SessionState::Ready => {
                match self.routed(&peer, &adjacent, permitted, &control, &msg) {
                    Some(origin) => Some(origin),
                    None => return,
                }
            }
            (_, from) => from,
        };
        let carries_payload = match control.command {
            CommandCode::Req => true,
            CommandCode::Rep => control.flags & flags::ERROR == 0,
            _ => false,
        };
        if !carries_payload && msg.len() > 2 {
            bump(&self.counters.ignored_payloads);
        }
        let body =
            || Multipart::from_frames(msg.frames().get(2..).unwrap_or_default().iter().cloned());
        match (control.command, state) {
            (CommandCode::Ready, _) => self.on_ready(now, &peer, control),
            (CommandCode::Disconnect, _) => {
                let reason = match control.body {
                    Body::Reason(reason) => printable(reason),
                    _ => Reason {
                        code: codes::PROTOCOL_VIOLATION,
                        detail: String::new(),
                    },
                };
                if let Some(session) = self.sessions.remove(&peer) {
                    self.lose(
                        peer,
                        session,
                        LossReason::Disconnected {
                            initiator: Initiator::Remote,
                            reason,
                        },
                    );
                }
            }
            (_, SessionState::AwaitingReady) => {
                self.violation_text(&peer, "message before READY");
            }
            (CommandCode::Ping, SessionState::Ready) => {
                if self.ping_within_budget(now, &peer) {
                    let pong = Control::new(CommandCode::Pong, 0, control.id, Body::Empty);
                    self.push(&peer, pong, std::iter::empty());
                }
            }
            (CommandCode::Pong, SessionState::Ready) => {
                // A sign of life like any message; one that answers no PING of ours (we
                // never sent that sequence number) is counted.
                if control.id == 0 || control.id > pings_sent {
                    bump(&self.counters.ignored_messages);
                }
            }
            (CommandCode::Req, SessionState::Ready) => {
                let Some(from) = from else {
                    return self.violation_text(&peer, "request before READY");
                };
                let expects_reply = control.flags & flags::EXPECT_REPLY != 0;
                let op = if expects_reply {
                    Operation::Request
                } else if control.flags & flags::BROADCAST != 0 {
                    Operation::Broadcast
                } else {
                    Operation::Notify
                };
                // A routed REQ is checked against its origin (`from` is the origin here).
                let permitted = match &control.route {
                    Some(_) => self.permitted_now(&from),
                    None => permitted,
                };
                if !permitted.contains(op) {
                    return self.refuse(&peer, &from, op, control.id);
                }
                let event = if expects_reply {
                    Event::Request {
                        peer,
                        from,
                        id: RequestId(control.id),
                        body: body(),
                        trace: control.trace,
                    }
                } else {
                    Event::Notification {
                        peer,
                        from,
                        broadcast: control.flags & flags::BROADCAST != 0,
                        body: body(),
                    }
                };
                self.events.push_back(event);
            }
            (CommandCode::Rep, SessionState::Ready) if RequestId(control.id).is_external() => {
                let result = reply_result(control.body, from, body);
                self.events.push_back(Event::ExternalReply {
                    peer,
                    id: RequestId(control.id),
                    result,
                });
            }
            (CommandCode::Rep, SessionState::Ready) => {
                let Some(pending) = self.pending.remove(&control.id) else {
                    bump(&self.counters.late_replies);
                    return;
                };
                if pending.peer != peer {
                    // A reply to someone else's request: put it back and ignore this one.
                    self.pending.insert(control.id, pending);
                    return self.violation_text(&peer, "reply to a request sent to another peer");
                }
                self.deadlines.remove(&(pending.deadline, control.id));
                if let Some(session) = self.sessions.get_mut(&peer) {
                    session.pending = session.pending.saturating_sub(1);
                }
                let result = reply_result(control.body, from, body);
                self.events.push_back(Event::Reply {
                    id: RequestId(control.id),
                    result,
                });
            }
        }
    }

    /// Timers: probes, heartbeats, liveness and request deadlines.
    ///
    /// A tick that comes later than the earliest deadline this protocol reported
    /// ([`poll_timeout`](Self::poll_timeout)) by more than a ping interval (or than the
    /// shortest liveness bound of a session, if shorter) means this process was not
    /// running (a SIGSTOP, a VM pause, a starved runtime): what peers sent meanwhile may
    /// wait unread in the sockets. Their silence is then not held against them: every
    /// session gets one more ping interval (at most half its liveness bound) to be heard
    /// from, a probe as long to be answered, and a requester pings at once (its next PING
    /// is overdue). A silence is excused once: a peer that really died is declared dead
    /// that much later, even if this process keeps running late; a live one is not torn
    /// down by the stale verdict of its resumed peer. Request deadlines are kept as they
    /// are.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(due) = self.poll_timeout() {
            let late = now.saturating_duration_since(due);
            // An on-time tick (the usual case) stops at the cheap bound: no bound is
            // shorter than MIN_LIVENESS.
            if late > self.config.ping_interval.min(MIN_LIVENESS) {
                let shortest = self.sessions.values().map(|s| s.liveness).min();
                let threshold = shortest.map_or(self.config.ping_interval, |l| {
                    l.min(self.config.ping_interval)
                });
                if late > threshold {
                    self.resumed_after_pause(now);
                }
            }
        }
        let mut lost = Vec::new();
        let mut pings = Vec::new();
        for (peer, session) in &mut self.sessions {
            match session.state {
                SessionState::AwaitingReady if now >= session.ready_deadline => {
                    lost.push((peer.clone(), LossReason::ProbeTimeout));
                }
                SessionState::AwaitingReady => {}
                SessionState::Ready => {
                    let silent_for = now.saturating_duration_since(session.last_heard);
                    if silent_for >= session.liveness {
                        lost.push((peer.clone(), LossReason::HeartbeatTimeout { silent_for }));
                    } else if let Some(at) = session.next_ping.filter(|at| now >= *at) {
                        session.ping_seq += 1;
                        let next = at + self.config.ping_interval;
                        session.next_ping = Some(if next > now {
                            next
                        } else {
                            now + self.config.ping_interval
                        });
                        pings.push((peer.clone(), session.ping_seq));
                    }
                }
            }
        }
        for (peer, seq) in pings {
            self.push(
                &peer,
                Control::new(CommandCode::Ping, 0, seq, Body::Empty),
                std::iter::empty(),
            );
        }
        for (peer, reason) in lost {
            let detail = reason.to_string();
            self.send_disconnect(&peer, codes::TIMEOUT, &detail);
            if let Some(session) = self.sessions.remove(&peer) {
                self.lose(peer, session, reason);
            }
        }
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(pending) = self.pending.remove(&id) {
                if let Some(session) = self.sessions.get_mut(&pending.peer) {
                    session.pending = session.pending.saturating_sub(1);
                }
                self.events.push_back(Event::Reply {
                    id: RequestId(id),
                    result: Err(RequestError::Timeout),
                });
            }
        }
    }

    /// See [`handle_timeout`](Self::handle_timeout): one more interval for every session
    /// not heard from since it was last excused (so a process that keeps running late
    /// still declares a dead peer dead).
    fn resumed_after_pause(&mut self, now: Instant) {
        bump(&self.counters.pauses);
        let interval = self.config.ping_interval;
        for session in self.sessions.values_mut() {
            if std::mem::replace(&mut session.excused, true) {
                continue;
            }
            let grace = interval.min(session.liveness / 2);
            match session.state {
                SessionState::AwaitingReady => {
                    session.ready_deadline = session.ready_deadline.max(now + grace);
                }
                SessionState::Ready => {
                    let floor = now.checked_sub(session.liveness.saturating_sub(grace));
                    if let Some(floor) = floor {
                        session.last_heard = session.last_heard.max(floor);
                    }
                }
            }
        }
    }

    // ---- application commands -----------------------------------------------------------

    /// Sends a request to `peer`; its outcome comes as [`Event::Reply`] with the returned id
    /// (a reply, a remote error, a timeout after `timeout`, or the peer's loss).
    pub fn request(
        &mut self,
        now: Instant,
        peer: &PeerId,
        body: Multipart,
        timeout: Duration,
    ) -> Result<RequestId, ProtoError> {
        self.request_traced(now, peer, body, timeout, None)
    }

    /// As [`request`](Self::request), the REQ carrying the trace context `trace`
    /// (docs/PROTOCOL.md §3.4); the responder sees it in [`Event::Request`].
    pub fn request_traced(
        &mut self,
        now: Instant,
        peer: &PeerId,
        body: Multipart,
        timeout: Duration,
        trace: Option<TraceContext>,
    ) -> Result<RequestId, ProtoError> {
        if self.pending.len() >= self.config.max_pending {
            return Err(ProtoError::TooManyPending {
                max: self.config.max_pending,
            });
        }
        let session = self.ready_session(peer)?;
        session.pending += 1;
        let id = self.next_id;
        self.next_id += 1;
        // `Duration::MAX` and the like mean "no timeout": a deadline past what `Instant`
        // holds would panic, so it is clamped.
        let deadline = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + MAX_REQUEST_TIMEOUT);
        self.pending.insert(
            id,
            Pending {
                peer: peer.clone(),
                deadline,
            },
        );
        self.deadlines.insert((deadline, id));
        self.transmits.push_back(Transmit {
            to: peer.clone(),
            msg: request_message(peer, self.local_hash, RequestId(id), body, trace),
            urgent: false,
        });
        Ok(RequestId(id))
    }

    /// Sends a one-way message to `peer` (`broadcast` marks one copy of a broadcast).
    pub fn notify(
        &mut self,
        peer: &PeerId,
        body: Multipart,
        broadcast: bool,
    ) -> Result<(), ProtoError> {
        self.ready_session(peer)?;
        let flag = if broadcast { flags::BROADCAST } else { 0 };
        self.push(
            peer,
            Control::new(CommandCode::Req, flag, 0, Body::Empty),
            body,
        );
        Ok(())
    }

    /// Sends a routed REQ (docs/PROTOCOL.md §3.5) to the adjacent `next` hop: this
    /// instance's own (`route.origin` is our path, `hop_limit` the default) or one it
    /// forwards (from [`Event::Forward`], with the hop limit it must carry on). With
    /// `EXPECT_REPLY` in `flags`, the next hop's reply comes as [`Event::Reply`] with the
    /// returned id, as for [`request`](Self::request).
    pub fn forward(
        &mut self,
        now: Instant,
        next: &PeerId,
        message: Routed,
        timeout: Duration,
    ) -> Result<Option<RequestId>, ProtoError> {
        let Routed {
            flags,
            route,
            hop_limit,
            body,
            trace,
        } = message;
        let expects_reply = flags & flags::EXPECT_REPLY != 0;
        if expects_reply && self.pending.len() >= self.config.max_pending {
            return Err(ProtoError::TooManyPending {
                max: self.config.max_pending,
            });
        }
        let session = self.ready_session(next)?;
        let id = if expects_reply {
            session.pending += 1;
            let id = self.next_id;
            self.next_id += 1;
            let deadline = now
                .checked_add(timeout)
                .unwrap_or_else(|| now + MAX_REQUEST_TIMEOUT);
            self.pending.insert(
                id,
                Pending {
                    peer: next.clone(),
                    deadline,
                },
            );
            self.deadlines.insert((deadline, id));
            Some(RequestId(id))
        } else {
            None
        };
        let mut control = Control::new(
            CommandCode::Req,
            flags,
            id.map_or(0, |id| id.0),
            Body::Empty,
        )
        .with_trace(trace)
        .with_route(Some(route));
        control.hop_limit = hop_limit;
        self.push(next, control, body);
        Ok(id)
    }

    /// Answers request `id` from `peer` with `result` (an error reply carries a code).
    pub fn reply(
        &mut self,
        peer: &PeerId,
        id: RequestId,
        result: Result<Multipart, Reason>,
    ) -> Result<(), ProtoError> {
        self.ready_session(peer)?;
        self.transmits.push_back(Transmit {
            to: peer.clone(),
            msg: reply_message(peer, self.local_hash, id, result),
            urgent: false,
        });
        Ok(())
    }

    /// The `source` this node's messages carry: the hash of its service path (what
    /// [`reply_message`] takes).
    pub fn source(&self) -> u64 {
        self.local_hash
    }

    /// Counts a reply the embedder could not match to an external request it still waits
    /// for (see [`Event::ExternalReply`]): in [`ProtoStats::late_replies`], as the
    /// protocol counts its own.
    pub fn count_late_reply(&self) {
        bump(&self.counters.late_replies);
    }

    /// Ends pending request `id` at once with [`RequestError::NotSent`]: its REQ, taken
    /// from [`poll_transmit`](Self::poll_transmit), could not be handed to the
    /// middleware. Its reply event follows; a reply that still came for it would be
    /// counted late. Returns whether `id` was pending.
    pub fn fail_unsent(&mut self, id: RequestId, why: impl Into<String>) -> bool {
        let Some(pending) = self.pending.remove(&id.0) else {
            return false;
        };
        self.deadlines.remove(&(pending.deadline, id.0));
        if let Some(session) = self.sessions.get_mut(&pending.peer) {
            session.pending = session.pending.saturating_sub(1);
        }
        self.events.push_back(Event::Reply {
            id,
            result: Err(RequestError::NotSent(why.into())),
        });
        true
    }

    /// Ends the session with `peer`: DISCONNECT goes out, nothing follows it.
    pub fn disconnect(&mut self, peer: &PeerId, reason: Reason) {
        if let Some(session) = self.sessions.remove(peer) {
            self.send_disconnect(peer, reason.code, &reason.detail);
            self.lose(
                peer.clone(),
                session,
                LossReason::Disconnected {
                    initiator: Initiator::Local,
                    reason,
                },
            );
        }
    }

    // ---- outputs ------------------------------------------------------------------------

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let sessions = self.sessions.values().map(Session::deadline).min();
        let requests = self.deadlines.first().map(|&(at, _)| at);
        match (sessions, requests) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ---- internals ----------------------------------------------------------------------

    fn ready_session(&mut self, peer: &PeerId) -> Result<&mut Session, ProtoError> {
        match self.sessions.get_mut(peer) {
            Some(session) if session.state == SessionState::Ready => Ok(session),
            _ => Err(ProtoError::NotReady(peer.clone())),
        }
    }

    fn push(&mut self, peer: &PeerId, mut control: Control, body: impl IntoIterator<Item = Bytes>) {
        control.source = self.local_hash;
        let mut msg = Multipart::from_frames([peer.to_frame(), control.encode()]);
        msg.extend(body);
        self.transmits.push_back(Transmit {
            to: peer.clone(),
            msg,
            urgent: matches!(control.command, CommandCode::Ping | CommandCode::Pong),
        });
    }

    fn send_ready(&mut self, peer: &PeerId, liveness_timeout_ms: u32) {
        let ready = Control::new(
            CommandCode::Ready,
            0,
            0,
            Body::Ready {
                path: self.config.local.as_str().to_owned(),
                liveness_timeout_ms,
                capabilities: if self.config.forwards {
                    capabilities::FORWARDS
                } else {
                    0
                },
            },
        );
        self.push(peer, ready, std::iter::empty());
    }

    fn send_disconnect(&mut self, peer: &PeerId, code: u16, detail: &str) {
        let reason = Reason {
            code,
            detail: detail.to_owned(),
        };
        self.push(
            peer,
            Control::new(CommandCode::Disconnect, 0, 0, Body::Reason(reason)),
            std::iter::empty(),
        );
    }

    fn on_ready(&mut self, now: Instant, peer: &PeerId, control: Control) {
        let Body::Ready {
            path,
            liveness_timeout_ms,
            capabilities: announced,
        } = control.body
        else {
            return self.violation_text(peer, "READY without its fields");
        };
        let Ok(path) = ServicePath::new(&path) else {
            return self.violation_text(peer, "READY with an invalid service path");
        };
        if path.as_str().as_bytes() != peer.as_bytes().as_ref() {
            return self.violation_text(peer, "READY path differs from the link identity");
        }
        match self.sessions.get(peer) {
            None => return,
            Some(session) if session.state == SessionState::Ready => {
                bump(&self.counters.ignored_messages);
                return; // a repeated READY changes nothing
            }
            Some(_) => {}
        }
        // The session keeps the policy's answer; the hook's is asked again on every REQ.
        let by_policy = match &self.config.acl {
            None => Operations::ALL,
            Some(policy) => policy.permitted(&path, &self.config.local),
        };
        let permitted = match &self.config.access_control {
            None => by_policy,
            Some(hook) => by_policy.intersection(hook.permitted(&path, &self.config.local)),
        };
        let Some(session) = self.sessions.get_mut(peer) else {
            return;
        };
        session.permitted = by_policy;
        session.forwards = announced & capabilities::FORWARDS != 0;
        match session.role {
            Role::Connector => {
                session.next_ping = Some(now + self.config.ping_interval);
            }
            Role::Acceptor => {
                if !permitted.contains(Operation::Connect) {
                    bump(&self.counters.acl_denied_connects);
                    let reason = Reason {
                        code: codes::ACCESS_DENIED,
                        detail: denied_detail(Operation::Connect, &path, &self.config.local),
                    };
                    return self.disconnect(peer, reason);
                }
                let asked = Duration::from_millis(u64::from(liveness_timeout_ms));
                session.liveness = if asked.is_zero() {
                    self.config.detection_bound()
                } else {
                    asked.clamp(MIN_LIVENESS, MAX_LIVENESS)
                };
            }
        }
        session.state = SessionState::Ready;
        session.path = Some(path.clone());
        session.last_heard = now;
        session.excused = false;
        let role = session.role;
        if role == Role::Acceptor {
            self.send_ready(peer, 0);
        }
        self.events.push_back(Event::PeerReady {
            peer: peer.clone(),
            path,
            role,
        });
    }

    /// Checks a routed REQ from the ready session `peer` (whose path is `adjacent`):
    /// the origin it names for its destination, or `None` when it was handled here (handed
    /// out as [`Event::Forward`], or refused: answered with an error if it expects a reply,
    /// counted if not). docs/PROTOCOL.md §3.5 has the rules.
    fn routed(
        &mut self,
        peer: &PeerId,
        adjacent: &ServicePath,
        permitted: Operations,
        control: &Control,
        msg: &Multipart,
    ) -> Option<ServicePath> {
        let route = control.route.as_ref()?;
        let relayed = route.origin != *adjacent;
        let forwards = self.sessions.get(peer).is_some_and(|s| s.forwards);
        let expects_reply = control.flags & flags::EXPECT_REPLY != 0;
        let refuse = |this: &mut Self, code: u16, detail: String| {
            if expects_reply {
                this.push(
                    peer,
                    Control::new(
                        CommandCode::Rep,
                        flags::ERROR,
                        control.id,
                        Body::Reason(Reason { code, detail }),
                    ),
                    std::iter::empty(),
                );
            }
        };
        if relayed && !forwards {
            bump(&self.counters.forged_origins);
            let detail = format!(
                "denied forward from {adjacent} to {}: {adjacent} claims the origin {} and does not forward",
                self.config.local, route.origin
            );
            refuse(self, codes::ACCESS_DENIED, detail);
            return None;
        }
        if relayed && !permitted.contains(Operation::Forward) {
            self.count_denied(expects_reply);
            let detail = denied_detail(Operation::Forward, adjacent, &self.config.local);
            refuse(self, codes::ACCESS_DENIED, detail);
            return None;
        }
        if route.destination == self.config.local {
            return Some(route.origin.clone());
        }
        if !self.config.forwards {
            bump(&self.counters.not_forwarded);
            let detail = format!(
                "{} does not forward (a request for {})",
                self.config.local, route.destination
            );
            refuse(self, codes::UNREACHABLE, detail);
            return None;
        }
        let origin_may = self
            .permitted_now(&route.origin)
            .contains(Operation::Forward);
        if !origin_may {
            self.count_denied(expects_reply);
            let detail = denied_detail(Operation::Forward, &route.origin, &self.config.local);
            refuse(self, codes::ACCESS_DENIED, detail);
            return None;
        }
        let message = Routed {
            flags: control.flags,
            route: route.clone(),
            hop_limit: control.hop_limit,
            body: Multipart::from_frames(msg.frames().get(2..).unwrap_or_default().iter().cloned()),
            trace: control.trace,
        };
        self.events.push_back(Event::Forward {
            peer: peer.clone(),
            id: RequestId(control.id),
            message,
        });
        None
    }

    /// What `principal` may do here now: the policy's answer and the hook's, both asked
    /// (everything when there is neither).
    fn permitted_now(&self, principal: &ServicePath) -> Operations {
        let local = &self.config.local;
        let policy = match &self.config.acl {
            None => Operations::ALL,
            Some(policy) => policy.permitted(principal, local),
        };
        match &self.config.access_control {
            None => policy,
            Some(hook) => policy.intersection(hook.permitted(principal, local)),
        }
    }

    fn count_denied(&self, request: bool) {
        if request {
            bump(&self.counters.acl_denied_requests);
        } else {
            bump(&self.counters.acl_denied_notifications);
        }
    }

    /// A REQ the ACL does not let `from` send: a request is answered `ACCESS_DENIED`, a
    /// notification or broadcast dropped; both are counted.
    fn refuse(&mut self, peer: &PeerId, from: &ServicePath, op: Operation, id: u64) {
        if op == Operation::Request {
            bump(&self.counters.acl_denied_requests);
            let reason = Reason {
                code: codes::ACCESS_DENIED,
                detail: denied_detail(op, from, &self.config.local),
            };
            self.push(
                peer,
                Control::new(CommandCode::Rep, flags::ERROR, id, Body::Reason(reason)),
                std::iter::empty(),
            );
        } else {
            bump(&self.counters.acl_denied_notifications);
        }
    }

    /// Takes one PING from `peer`'s bucket: whether it is within the budget. A peer over
    /// budget `flood` times within the flood window is disconnected.
    fn ping_within_budget(&mut self, now: Instant, peer: &PeerId) -> bool {
        let limit = self.config.ping_limit;
        let Some(session) = self.sessions.get_mut(peer) else {
            return false;
        };
        let (per_second, burst) = session_budget(&limit, session.liveness);
        let elapsed = now.saturating_duration_since(session.ping_refilled);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let capacity = burst.saturating_mul(PING_COST);
        session.ping_tokens = session
            .ping_tokens
            .saturating_add(micros.saturating_mul(per_second))
            .min(capacity);
        session.ping_refilled = now;
        if session.ping_tokens >= PING_COST {
            session.ping_tokens -= PING_COST;
            return true;
        }
        bump(&self.counters.pings_dropped);
        if now.saturating_duration_since(session.flood_window_start) >= limit.flood_window {
            session.flood_window_start = now;
            session.flood_count = 0;
        }
        session.flood_count = session.flood_count.saturating_add(1);
        if session.flood_count >= limit.flood.max(1) {
            bump(&self.counters.ping_floods);
            let detail = format!(
                "PING flood: {} over the budget of {}/s within {:?}",
                session.flood_count, limit.per_second, limit.flood_window
            );
            self.end_for_violation(peer, codes::RATE_LIMITED, detail);
        }
        false
    }

    fn violation(&mut self, peer: &PeerId, err: ControlError) {
        let code = if matches!(err, ControlError::Version(_)) {
            codes::VERSION_MISMATCH
        } else {
            codes::PROTOCOL_VIOLATION
        };
        self.end_for_violation(peer, code, err.to_string());
    }

    fn violation_text(&mut self, peer: &PeerId, what: &str) {
        self.end_for_violation(peer, codes::PROTOCOL_VIOLATION, what.to_owned());
    }

    fn end_for_violation(&mut self, peer: &PeerId, code: u16, detail: String) {
        self.send_disconnect(peer, code, &detail);
        if let Some(session) = self.sessions.remove(peer) {
            self.lose(peer.clone(), session, LossReason::ProtocolViolation(detail));
        }
    }

    /// Reports a removed session lost and fails its pending requests.
    fn lose(&mut self, peer: PeerId, session: Session, reason: LossReason) {
        if session.pending > 0 {
            let failed: Vec<u64> = self
                .pending
                .iter()
                .filter(|(_, p)| p.peer == peer)
                .map(|(&id, _)| id)
                .collect();
            for id in failed {
                if let Some(pending) = self.pending.remove(&id) {
                    self.deadlines.remove(&(pending.deadline, id));
                }
                self.events.push_back(Event::Reply {
                    id: RequestId(id),
                    result: Err(RequestError::PeerLost(reason.clone())),
                });
            }
        }
        self.events.push_back(Event::PeerLost {
            peer,
            path: session.path,
            reason,
        });
    }
}

/// The detail of an `ACCESS_DENIED` refusal: `denied OP from PRINCIPAL to SERVICE`
/// (docs/PROTOCOL.md §3.1; cut at 255 bytes on the wire).
fn denied_detail(op: Operation, principal: &ServicePath, service: &ServicePath) -> String {
    format!("denied {op} from {principal} to {service}")
}

/// A peer's reason as the application sees it: control characters (newlines, escapes,
/// NUL...) in the detail are replaced by U+FFFD, so that a peer cannot forge log lines or
/// terminal output with them.
/// The REQ of request `id` to `peer`, as a node whose [`Protocol::source`] is `source`
/// sends it: `[peer, REQ (EXPECT_REPLY, the trace context if any), body…]`
/// (docs/PROTOCOL.md §3.2). What [`Protocol::request`] queues; also for an embedder that
/// writes an external request (see [`RequestId::EXTERNAL`]) to the link itself.
pub fn request_message(
    peer: &PeerId,
    source: u64,
    id: RequestId,
    body: Multipart,
    trace: Option<TraceContext>,
) -> Multipart {
    let mut control =
        Control::new(CommandCode::Req, flags::EXPECT_REPLY, id.0, Body::Empty).with_trace(trace);
    control.source = source;
    let mut msg = Multipart::from_frames([peer.to_frame(), control.encode()]);
    msg.extend(body);
    msg
}

/// The REP answering request `id` of `peer`, as a node whose [`Protocol::source`] is
/// `source` sends it: `[peer, REP, body…]`, or an ERROR REP carrying the reason and no
/// body (docs/PROTOCOL.md §3.3). What [`Protocol::reply`] queues; also for a caller that
/// writes a reply to the link itself (the kernel answering from the handler's task while
/// the session is the one the request came on).
pub fn reply_message(
    peer: &PeerId,
    source: u64,
    id: RequestId,
    result: Result<Multipart, Reason>,
) -> Multipart {
    let (mut control, body) = match result {
        Ok(body) => (Control::new(CommandCode::Rep, 0, id.0, Body::Empty), body),
        Err(reason) => (
            Control::new(CommandCode::Rep, flags::ERROR, id.0, Body::Reason(reason)),
            Multipart::new(),
        ),
    };
    control.source = source;
    let mut msg = Multipart::from_frames([peer.to_frame(), control.encode()]);
    msg.extend(body);
    msg
}

/// What a REP carries: its body, or the error its reason says (a refusal by the ACL of
/// `from`, or another remote error).
fn reply_result(
    control: Body,
    from: Option<ServicePath>,
    body: impl FnOnce() -> Multipart,
) -> Result<Multipart, RequestError> {
    match (control, from) {
        (Body::Reason(reason), Some(service)) if reason.code == codes::ACCESS_DENIED => {
            let reason = printable(reason);
            Err(RequestError::Denied {
                service,
                op: denied_operation(&reason.detail).unwrap_or(Operation::Request),
                detail: reason.detail,
            })
        }
        (Body::Reason(reason), _) => Err(RequestError::Remote(printable(reason))),
        _ => Ok(body()),
    }
}

fn printable(mut reason: Reason) -> Reason {
    if let std::borrow::Cow::Owned(shown) = crate::text::printable(&reason.detail) {
        reason.detail = shown;
    }
    reason
}

/// The operation an `ACCESS_DENIED` detail names, if it follows the format.
fn denied_operation(detail: &str) -> Option<Operation> {
    detail
        .strip_prefix("denied ")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}
