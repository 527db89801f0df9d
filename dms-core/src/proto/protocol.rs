//! [`Protocol`]: all sessions of one local instance, and its pending requests.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::control::{Body, CommandCode, Control, ControlError, Reason, codes, flags};
use super::session::{Session, SessionState};
use crate::path::{ClusterPath, ServicePath};
use crate::{Multipart, PeerId, Role};

/// Shortest liveness timeout a requester may ask a responder to apply.
const MIN_LIVENESS: Duration = Duration::from_millis(50);
/// Longest liveness timeout a requester may ask for.
const MAX_LIVENESS: Duration = Duration::from_secs(600);
/// Request timeout used when the one asked for overflows the clock (about a year).
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Settings of a [`Protocol`].
#[derive(Debug, Clone)]
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
    /// Clusters allowed to open sessions with us (`None`: everyone). Others get
    /// DISCONNECT with `ACCESS_DENIED`.
    pub acl: Option<Vec<ClusterPath>>,
}

impl ProtoConfig {
    /// Defaults: PING every second, dead after 3 missed, READY within 2 s, 65,536 pending
    /// requests, no ACL.
    pub fn new(local: ServicePath) -> Self {
        Self {
            local,
            ping_interval: Duration::from_secs(1),
            missed_pongs: 3,
            ready_timeout: Duration::from_secs(2),
            max_pending: 65_536,
            acl: None,
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
    sessions: HashMap<PeerId, Session>,
    pending: HashMap<u64, Pending>,
    deadlines: BTreeSet<(Instant, u64)>,
    next_id: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    local_hash: u64,
    /// Replies that arrived for requests no longer pending (timed out).
    late_replies: u64,
}

impl Protocol {
    /// A protocol instance with no session.
    pub fn new(config: ProtoConfig) -> Self {
        let local_hash = config.local.hash64();
        Self {
            config,
            sessions: HashMap::new(),
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            next_id: 1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            local_hash,
            late_replies: 0,
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
        self.late_replies
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
            liveness,
            ready_deadline: now + self.config.ready_timeout,
            next_ping: None,
            ping_seq: 0,
            pending: 0,
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
    /// Peer faults end the session (reported as `PeerLost`), never an `Err`.
    pub fn handle_message(&mut self, now: Instant, peer: PeerId, msg: Multipart) {
        let Some(session) = self.sessions.get_mut(&peer) else {
            return;
        };
        session.last_heard = now;
        let state = session.state;
        let from = session.path.clone();
        let control = match msg.frames().get(1).map(|frame| Control::decode(frame)) {
            Some(Ok(control)) => control,
            Some(Err(err)) => return self.violation(&peer, err),
            None => return self.violation(&peer, ControlError::Missing),
        };
        let body =
            || Multipart::from_frames(msg.frames().get(2..).unwrap_or_default().iter().cloned());
        match (control.command, state) {
            (CommandCode::Ready, _) => self.on_ready(now, &peer, control),
            (CommandCode::Disconnect, _) => {
                let reason = match control.body {
                    Body::Reason(reason) => reason,
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
                let pong = Control::new(CommandCode::Pong, 0, control.id, Body::Empty);
                self.push(&peer, pong, std::iter::empty());
            }
            (CommandCode::Pong, SessionState::Ready) => {}
            (CommandCode::Req, SessionState::Ready) => {
                let Some(from) = from else {
                    return self.violation_text(&peer, "request before READY");
                };
                let event = if control.flags & flags::EXPECT_REPLY != 0 {
                    Event::Request {
                        peer,
                        from,
                        id: RequestId(control.id),
                        body: body(),
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
            (CommandCode::Rep, SessionState::Ready) => {
                let Some(pending) = self.pending.remove(&control.id) else {
                    self.late_replies += 1;
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
                let result = match control.body {
                    Body::Reason(reason) => Err(RequestError::Remote(reason)),
                    _ => Ok(body()),
                };
                self.events.push_back(Event::Reply {
                    id: RequestId(control.id),
                    result,
                });
            }
        }
    }

    /// Timers: probes, heartbeats, liveness and request deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
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
        let control = Control::new(CommandCode::Req, flags::EXPECT_REPLY, id, Body::Empty);
        self.push(peer, control, body);
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

    /// Answers request `id` from `peer` with `result` (an error reply carries a code).
    pub fn reply(
        &mut self,
        peer: &PeerId,
        id: RequestId,
        result: Result<Multipart, Reason>,
    ) -> Result<(), ProtoError> {
        self.ready_session(peer)?;
        match result {
            Ok(body) => self.push(
                peer,
                Control::new(CommandCode::Rep, 0, id.0, Body::Empty),
                body,
            ),
            Err(reason) => self.push(
                peer,
                Control::new(CommandCode::Rep, flags::ERROR, id.0, Body::Reason(reason)),
                std::iter::empty(),
            ),
        }
        Ok(())
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
                capabilities: 0,
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
            ..
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
        let Some(session) = self.sessions.get_mut(peer) else {
            return;
        };
        if session.state == SessionState::Ready {
            return; // a repeated READY changes nothing
        }
        match session.role {
            Role::Connector => {
                session.next_ping = Some(now + self.config.ping_interval);
            }
            Role::Acceptor => {
                let allowed = self
                    .config
                    .acl
                    .as_ref()
                    .is_none_or(|acl| acl.contains(&path.cluster()));
                if !allowed {
                    let reason = Reason {
                        code: codes::ACCESS_DENIED,
                        detail: format!("{} may not talk to {}", path.cluster(), self.config.local),
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
