//! A deterministic two-node simulator: two [`Protocol`]s, a virtual clock, per-direction
//! latency and loss. No sockets, no real time. `sim_seeds` runs it over many seeds.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::control::{Body, CommandCode, Control, Reason, codes};
use super::*;
use crate::acl::{AclPolicy, Operation};
use crate::path::{ClusterPath, ServicePath};
use crate::{Multipart, PeerId, Role};

pub(super) const LATENCY: Duration = Duration::from_millis(5);

/// The origin of the virtual clock: the only real clock read; time then only moves when
/// the simulator moves it.
#[allow(clippy::disallowed_methods)]
pub(super) fn epoch() -> Instant {
    Instant::now()
}

pub(super) struct Node {
    pub(super) proto: Protocol,
    pub(super) events: Vec<Event>,
    /// When each of `events` came out (kept in step by `collect` and `ready_with`).
    pub(super) at: Vec<Instant>,
    /// When each message was delivered to this node.
    pub(super) heard: Vec<Instant>,
}

impl Node {
    fn new(config: ProtoConfig) -> Self {
        Self {
            proto: Protocol::new(config),
            events: Vec::new(),
            at: Vec::new(),
            heard: Vec::new(),
        }
    }
}

/// What the network does to a message sent at `now` (`to_b`: by the requester): `None`
/// drops it, `Some(extra)` delivers it `LATENCY + extra` later, never before a message
/// sent earlier the same way (a stream).
pub(super) type Faults = Box<dyn FnMut(Instant, bool) -> Option<Duration>>;

/// Requester `a` connected to responder `b`.
pub(super) struct Pair {
    pub(super) now: Instant,
    pub(super) a: Node,
    pub(super) b: Node,
    /// In flight, by delivery time: (delivery time, to_b, message).
    wire: VecDeque<(Instant, bool, Multipart)>,
    /// Drop every message from a to b / b to a while set.
    drop_a_to_b: bool,
    drop_b_to_a: bool,
    /// Per-message loss and delay, besides the two switches above.
    pub(super) faults: Option<Faults>,
    /// The delivery time of the last message sent towards a / b.
    last_due: [Instant; 2],
}

fn path(s: &str) -> ServicePath {
    s.parse().unwrap()
}

pub(super) fn a_path() -> ServicePath {
    path("/demo/cn/android/w1/g1/Lobby/lobby-1")
}

pub(super) fn b_path() -> ServicePath {
    path("/demo/cn/android/w1/g1/Battle/battle-1")
}

impl Pair {
    fn new(b_config: impl FnOnce(&mut ProtoConfig)) -> Self {
        Self::new_with(|_| {}, b_config)
    }

    /// The requester pings every 100 ms, dead after 3 missed, unless `a_config` says else.
    fn new_with(
        a_config: impl FnOnce(&mut ProtoConfig),
        b_config: impl FnOnce(&mut ProtoConfig),
    ) -> Self {
        let now = epoch();
        let mut a = ProtoConfig::new(a_path());
        a.ping_interval = Duration::from_millis(100);
        a.missed_pongs = 3;
        a_config(&mut a);
        let mut b = ProtoConfig::new(b_path());
        b_config(&mut b);
        let mut pair = Self {
            now,
            a: Node::new(a),
            b: Node::new(b),
            wire: VecDeque::new(),
            drop_a_to_b: false,
            drop_b_to_a: false,
            faults: None,
            last_due: [now; 2],
        };
        pair.a
            .proto
            .handle_link_up(now, b_path().peer_id(), Role::Connector);
        pair.b
            .proto
            .handle_link_up(now, a_path().peer_id(), Role::Acceptor);
        pair
    }

    fn ready() -> Self {
        Self::ready_with(|_| {})
    }

    pub(super) fn ready_with(a_config: impl FnOnce(&mut ProtoConfig)) -> Self {
        let mut pair = Self::new_with(a_config, |_| {});
        pair.drive_for(Duration::from_millis(20));
        assert!(matches!(
            pair.a.events[0],
            Event::PeerReady {
                role: Role::Connector,
                ..
            }
        ));
        assert!(matches!(
            pair.b.events[0],
            Event::PeerReady {
                role: Role::Acceptor,
                ..
            }
        ));
        for node in [&mut pair.a, &mut pair.b] {
            node.events.clear();
            node.at.clear();
        }
        pair
    }

    pub(super) fn collect(&mut self) {
        while let Some(t) = self.a.proto.poll_transmit() {
            assert_eq!(t.msg[0], t.to.to_frame());
            check_urgency(&t);
            if !self.drop_a_to_b {
                self.send(true, t.msg);
            }
        }
        while let Some(t) = self.b.proto.poll_transmit() {
            check_urgency(&t);
            if !self.drop_b_to_a {
                self.send(false, t.msg);
            }
        }
        while let Some(e) = self.a.proto.poll_event() {
            self.a.events.push(e);
            self.a.at.push(self.now);
        }
        while let Some(e) = self.b.proto.poll_event() {
            self.b.events.push(e);
            self.b.at.push(self.now);
        }
    }

    fn send(&mut self, to_b: bool, msg: Multipart) {
        let extra = match &mut self.faults {
            None => Some(Duration::ZERO),
            Some(faults) => faults(self.now, to_b),
        };
        let Some(extra) = extra else { return };
        let last = &mut self.last_due[usize::from(to_b)];
        let due = (self.now + LATENCY + extra).max(*last);
        *last = due;
        let at = self.wire.partition_point(|w| w.0 <= due);
        self.wire.insert(at, (due, to_b, msg));
    }

    /// Runs the simulation until `now + span`, jumping from event to event.
    pub(super) fn drive_for(&mut self, span: Duration) {
        let end = self.now + span;
        loop {
            self.collect();
            let next_wire = self.wire.front().map(|w| w.0);
            let next_timer = [self.a.proto.poll_timeout(), self.b.proto.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let next = [next_wire, next_timer].into_iter().flatten().min();
            let Some(next) = next.filter(|&t| t <= end) else {
                self.now = end;
                return;
            };
            self.now = self.now.max(next);
            while self.wire.front().is_some_and(|w| w.0 <= self.now) {
                let (_, to_b, msg) = self.wire.pop_front().unwrap();
                if to_b {
                    self.b.heard.push(self.now);
                    self.b
                        .proto
                        .handle_message(self.now, a_path().peer_id(), msg);
                } else {
                    self.a.heard.push(self.now);
                    self.a
                        .proto
                        .handle_message(self.now, b_path().peer_id(), msg);
                }
            }
            self.a.proto.handle_timeout(self.now);
            self.b.proto.handle_timeout(self.now);
        }
    }
}

fn lost(events: &[Event]) -> Option<&LossReason> {
    events.iter().find_map(|e| match e {
        Event::PeerLost { reason, .. } => Some(reason),
        _ => None,
    })
}

#[test]
fn handshake_makes_both_sides_ready() {
    let pair = Pair::ready();
    assert_eq!(
        pair.a.proto.session_state(&b_path().peer_id()),
        Some(SessionState::Ready)
    );
    assert_eq!(
        pair.b.proto.session_state(&a_path().peer_id()),
        Some(SessionState::Ready)
    );
}

/// Heartbeats, and only they, are marked urgent (sent ahead of queued data).
fn check_urgency(t: &Transmit) {
    let control = Control::decode(&t.msg[1]).unwrap();
    let heartbeat = matches!(control.command, CommandCode::Ping | CommandCode::Pong);
    assert_eq!(t.urgent, heartbeat, "{:?}", control.command);
}

#[test]
fn healthy_link_stays_up_with_pings() {
    let mut pair = Pair::ready();
    pair.drive_for(Duration::from_secs(10));
    assert!(lost(&pair.a.events).is_none());
    assert!(lost(&pair.b.events).is_none());
}

#[test]
fn requester_detects_a_silent_responder_within_the_bound() {
    let mut pair = Pair::ready();
    let silent_from = pair.now;
    pair.drop_b_to_a = true;
    pair.drive_for(Duration::from_secs(2));
    let Event::PeerLost { reason, .. } = pair
        .a
        .events
        .iter()
        .find(|e| matches!(e, Event::PeerLost { .. }))
        .unwrap()
    else {
        unreachable!()
    };
    let LossReason::HeartbeatTimeout { silent_for } = reason else {
        panic!("{reason:?}")
    };
    let bound = Duration::from_millis(300);
    assert!(
        *silent_for >= bound && *silent_for < bound + Duration::from_millis(110),
        "{silent_for:?}"
    );
    let _ = silent_from;
}

#[test]
fn responder_applies_the_liveness_timeout_from_ready() {
    let mut pair = Pair::ready();
    pair.drop_a_to_b = true;
    pair.drive_for(Duration::from_secs(2));
    match lost(&pair.b.events) {
        Some(LossReason::HeartbeatTimeout { silent_for }) => {
            assert!(*silent_for >= Duration::from_millis(300), "{silent_for:?}");
            assert!(*silent_for < Duration::from_millis(400), "{silent_for:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unanswered_probe_times_out() {
    let mut pair = Pair::new(|_| {});
    pair.drop_b_to_a = true;
    pair.drive_for(Duration::from_secs(3));
    assert_eq!(lost(&pair.a.events), Some(&LossReason::ProbeTimeout));
}

#[test]
fn request_reply_correlates_by_id() {
    let mut pair = Pair::ready();
    let b = b_path().peer_id();
    let t = Duration::from_secs(1);
    let first = pair
        .a
        .proto
        .request(pair.now, &b, Multipart::from_frames(["one"]), t)
        .unwrap();
    let second = pair
        .a
        .proto
        .request(pair.now, &b, Multipart::from_frames(["two"]), t)
        .unwrap();
    assert_eq!(pair.a.proto.pending_for(&b), 2);
    pair.drive_for(Duration::from_millis(10));
    let requests: Vec<_> = pair
        .b
        .events
        .drain(..)
        .filter_map(|e| match e {
            Event::Request { id, body, from, .. } => {
                assert_eq!(from, a_path());
                Some((id, body))
            }
            _ => None,
        })
        .collect();
    assert_eq!(requests.len(), 2);
    // Answer in reverse order: ids, not order, correlate.
    for (id, body) in requests.into_iter().rev() {
        let mut answer = body.clone();
        answer.push("!");
        pair.b
            .proto
            .reply(&a_path().peer_id(), id, Ok(answer))
            .unwrap();
    }
    pair.drive_for(Duration::from_millis(10));
    let replies: Vec<_> = pair
        .a
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Reply { id, result } => Some((*id, result.clone().unwrap())),
            _ => None,
        })
        .collect();
    assert_eq!(
        replies,
        [
            (second, Multipart::from_frames(["two", "!"])),
            (first, Multipart::from_frames(["one", "!"])),
        ]
    );
    assert_eq!(pair.a.proto.pending(), 0);
}

#[test]
fn request_without_reply_times_out_and_late_reply_is_counted() {
    let mut pair = Pair::ready();
    let b = b_path().peer_id();
    let id = pair
        .a
        .proto
        .request(
            pair.now,
            &b,
            Multipart::from_frames(["x"]),
            Duration::from_millis(50),
        )
        .unwrap();
    pair.drive_for(Duration::from_millis(100));
    assert!(pair.a.events.contains(&Event::Reply {
        id,
        result: Err(RequestError::Timeout)
    }));
    let req = pair.b.events.iter().find_map(|e| match e {
        Event::Request { id, .. } => Some(*id),
        _ => None,
    });
    pair.b
        .proto
        .reply(&a_path().peer_id(), req.unwrap(), Ok(Multipart::new()))
        .unwrap();
    pair.drive_for(Duration::from_millis(20));
    assert_eq!(pair.a.proto.late_replies(), 1);
}

/// B answers every request it was handed with `answer` and returns how many it answered.
fn answer_all(pair: &mut Pair, answer: impl Fn(&Multipart) -> Result<Multipart, Reason>) -> usize {
    let requests: Vec<(RequestId, Multipart)> = pair
        .b
        .events
        .drain(..)
        .filter_map(|e| match e {
            Event::Request { id, body, .. } => Some((id, body)),
            _ => None,
        })
        .collect();
    for (id, body) in &requests {
        pair.b
            .proto
            .reply(&a_path().peer_id(), *id, answer(body))
            .unwrap();
    }
    requests.len()
}

#[test]
fn replies_to_external_requests_come_as_external_replies_and_leave_tracked_ones_alone() {
    let mut pair = Pair::ready();
    let b = b_path().peer_id();
    // A tracked request whose id has the same low bits as the external ones below.
    let tracked = pair
        .a
        .proto
        .request(
            pair.now,
            &b,
            Multipart::from_frames(["tracked"]),
            Duration::from_secs(30),
        )
        .unwrap();
    pair.drive_for(Duration::from_millis(20));
    let tracked_req = pair.b.events.iter().find_map(|e| match e {
        Event::Request { id, .. } => Some(*id),
        _ => None,
    });
    assert_eq!(tracked_req, Some(tracked));
    pair.b.events.clear();
    // Two requests written as an embedder does, beside the protocol: one answered, one
    // refused.
    let ok = RequestId(tracked.0 | RequestId::EXTERNAL);
    let refused = RequestId((tracked.0 + 1) | RequestId::EXTERNAL);
    assert!(ok.is_external() && refused.is_external() && !tracked.is_external());
    let source = pair.a.proto.source();
    for (id, text) in [(ok, "ok"), (refused, "no")] {
        let req = request_message(&b, source, id, Multipart::from_frames([text]), None);
        pair.send(true, req);
    }
    pair.a.events.clear();
    pair.drive_for(Duration::from_millis(20));
    let answered = answer_all(&mut pair, |body| {
        if body[0].as_ref() == b"ok" {
            Ok(Multipart::from_frames(["ok!"]))
        } else {
            Err(Reason {
                code: codes::OVERLOADED,
                detail: "busy".into(),
            })
        }
    });
    assert_eq!(answered, 2, "B saw both external requests as requests");
    pair.drive_for(Duration::from_millis(20));
    let external: Vec<(RequestId, Result<Multipart, RequestError>)> = pair
        .a
        .events
        .iter()
        .filter_map(|e| match e {
            Event::ExternalReply { peer, id, result } => {
                assert_eq!(peer, &b);
                Some((*id, result.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(external.len(), 2, "{:?}", pair.a.events);
    assert_eq!(external[0], (ok, Ok(Multipart::from_frames(["ok!"]))));
    assert_eq!(external[1].0, refused);
    assert!(
        matches!(&external[1].1, Err(RequestError::Remote(r)) if r.code == codes::OVERLOADED),
        "{:?}",
        external[1].1
    );
    // Neither touched the tracked request nor counted as late.
    assert!(
        !pair
            .a
            .events
            .iter()
            .any(|e| matches!(e, Event::Reply { .. }))
    );
    assert_eq!(pair.a.proto.pending(), 1);
    assert_eq!(pair.a.proto.late_replies(), 0);
    // The embedder counts a reply it no longer waits for.
    pair.a.proto.count_late_reply();
    assert_eq!(pair.a.proto.late_replies(), 1);
    // The tracked request still completes as before.
    pair.b
        .proto
        .reply(
            &a_path().peer_id(),
            tracked,
            Ok(Multipart::from_frames(["t!"])),
        )
        .unwrap();
    pair.drive_for(Duration::from_millis(20));
    assert!(pair.a.events.contains(&Event::Reply {
        id: tracked,
        result: Ok(Multipart::from_frames(["t!"]))
    }));
    assert_eq!(pair.a.proto.pending(), 0);
}

#[test]
fn pending_requests_fail_when_the_peer_is_lost() {
    let mut pair = Pair::ready();
    let b = b_path().peer_id();
    let id = pair
        .a
        .proto
        .request(
            pair.now,
            &b,
            Multipart::from_frames(["x"]),
            Duration::from_secs(30),
        )
        .unwrap();
    pair.a.proto.handle_link_down(pair.now, &b);
    pair.collect();
    assert!(pair.a.events.contains(&Event::Reply {
        id,
        result: Err(RequestError::PeerLost(LossReason::LinkDown))
    }));
    assert_eq!(pair.a.proto.pending(), 0);
}

#[test]
fn request_with_a_huge_timeout_does_not_panic() {
    let mut pair = Pair::ready();
    let b = b_path().peer_id();
    pair.a
        .proto
        .request(pair.now, &b, Multipart::new(), Duration::MAX)
        .unwrap();
    assert_eq!(pair.a.proto.pending(), 1);
    assert!(pair.a.proto.poll_timeout().is_some());
}

#[test]
fn pending_table_is_bounded() {
    let mut pair = Pair::ready();
    let b = b_path().peer_id();
    let max = pair.a.proto.config().max_pending;
    for _ in 0..max {
        pair.a
            .proto
            .request(pair.now, &b, Multipart::new(), Duration::from_secs(1))
            .unwrap();
    }
    assert_eq!(
        pair.a
            .proto
            .request(pair.now, &b, Multipart::new(), Duration::from_secs(1)),
        Err(ProtoError::TooManyPending { max })
    );
}

#[test]
fn disconnect_is_terminal() {
    let mut pair = Pair::ready();
    let a = a_path().peer_id();
    pair.b.proto.disconnect(
        &a,
        Reason {
            code: codes::SHUTDOWN,
            detail: "bye".into(),
        },
    );
    pair.drive_for(Duration::from_millis(20));
    match lost(&pair.a.events) {
        Some(LossReason::Disconnected {
            initiator: Initiator::Remote,
            reason,
        }) => assert_eq!(reason.code, codes::SHUTDOWN),
        other => panic!("{other:?}"),
    }
    assert!(
        pair.b
            .proto
            .reply(&a, RequestId(1), Ok(Multipart::new()))
            .is_err()
    );
    assert!(
        pair.b.proto.poll_transmit().is_none(),
        "nothing after DISCONNECT"
    );
    assert!(
        pair.a
            .proto
            .notify(&b_path().peer_id(), Multipart::new(), false)
            .is_err()
    );
}

#[test]
fn acl_refuses_other_clusters_with_a_reason() {
    let allowed: ClusterPath = "/demo/cn/android/w1/g1/Club".parse().unwrap();
    let mut pair = Pair::new(|b| b.acl = Some(AclPolicy::allow_clusters([allowed])));
    pair.drive_for(Duration::from_millis(50));
    match lost(&pair.a.events) {
        Some(LossReason::Disconnected {
            initiator: Initiator::Remote,
            reason,
        }) => {
            assert_eq!(reason.code, codes::ACCESS_DENIED);
            assert_eq!(
                reason.detail,
                format!("denied connect from {} to {}", a_path(), b_path())
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !pair
            .a
            .events
            .iter()
            .any(|e| matches!(e, Event::PeerReady { .. }))
    );
}

#[test]
fn data_before_ready_is_a_violation() {
    let now = epoch();
    let mut b = Protocol::new(ProtoConfig::new(b_path()));
    let a = a_path().peer_id();
    b.handle_link_up(now, a.clone(), Role::Acceptor);
    let req = Control::new(CommandCode::Req, 0, 0, Body::Empty).encode();
    b.handle_message(now, a.clone(), Multipart::from_frames([a.to_frame(), req]));
    let disconnect = b.poll_transmit().unwrap();
    let control = Control::decode(&disconnect.msg[1]).unwrap();
    assert_eq!(control.command, CommandCode::Disconnect);
    assert!(matches!(
        b.poll_event(),
        Some(Event::PeerLost {
            reason: LossReason::ProtocolViolation(_),
            ..
        })
    ));
}

#[test]
fn spoofed_ready_path_is_a_violation() {
    let now = epoch();
    let mut b = Protocol::new(ProtoConfig::new(b_path()));
    let a = a_path().peer_id();
    b.handle_link_up(now, a.clone(), Role::Acceptor);
    let ready = Control::new(
        CommandCode::Ready,
        0,
        0,
        Body::Ready {
            path: "/demo/cn/android/w1/g1/Admin/root".into(),
            liveness_timeout_ms: 1000,
            capabilities: 0,
        },
    )
    .encode();
    b.handle_message(
        now,
        a.clone(),
        Multipart::from_frames([a.to_frame(), ready]),
    );
    let _ = b.poll_transmit();
    assert!(matches!(
        b.poll_event(),
        Some(Event::PeerLost {
            reason: LossReason::ProtocolViolation(_),
            ..
        })
    ));
}

#[test]
fn garbage_control_frames_never_panic() {
    let now = epoch();
    let mut b = Protocol::new(ProtoConfig::new(b_path()));
    let a = a_path().peer_id();
    for len in 0..64 {
        b.handle_link_up(now, a.clone(), Role::Acceptor);
        let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 1) as u8).collect();
        b.handle_message(
            now,
            a.clone(),
            Multipart::from_frames([a.to_frame(), junk.into()]),
        );
        while b.poll_transmit().is_some() {}
        while b.poll_event().is_some() {}
    }
    let _: PeerId = a;
}

// ---- ACL matrix -------------------------------------------------------------------------

/// Two protocols linked back to back without latency: `holder` has the policy under
/// test, `principal` is the peer whose operations it checks.
struct Duo {
    now: Instant,
    holder: Protocol,
    principal: Protocol,
    holder_events: Vec<Event>,
    principal_events: Vec<Event>,
}

impl Duo {
    /// Links the two; `holder_dials`: the holder is the requester (so `connect` is not
    /// checked and only the per-message checks apply).
    fn new(
        holder: ServicePath,
        principal: ServicePath,
        acl: Option<AclPolicy>,
        holder_dials: bool,
    ) -> Self {
        let now = epoch();
        let mut config = ProtoConfig::new(holder.clone());
        config.acl = acl;
        let mut duo = Self {
            now,
            holder: Protocol::new(config),
            principal: Protocol::new(ProtoConfig::new(principal.clone())),
            holder_events: Vec::new(),
            principal_events: Vec::new(),
        };
        let (holder_role, principal_role) = if holder_dials {
            (Role::Connector, Role::Acceptor)
        } else {
            (Role::Acceptor, Role::Connector)
        };
        duo.principal
            .handle_link_up(now, principal.peer_id(), principal_role);
        duo.holder
            .handle_link_up(now, principal.peer_id(), holder_role);
        duo.principal
            .handle_link_up(now, holder.peer_id(), principal_role);
        duo.pump();
        duo
    }

    fn holder_id(&self) -> PeerId {
        self.holder.config().local.peer_id()
    }

    fn principal_id(&self) -> PeerId {
        self.principal.config().local.peer_id()
    }

    fn ready(&self) -> bool {
        self.holder.session_state(&self.principal_id()) == Some(SessionState::Ready)
    }

    /// Delivers everything in flight, both ways, until nothing moves (no time passes).
    fn pump(&mut self) {
        let (holder_id, principal_id) = (self.holder_id(), self.principal_id());
        loop {
            let mut moved = false;
            while let Some(t) = self.holder.poll_transmit() {
                self.principal
                    .handle_message(self.now, holder_id.clone(), t.msg);
                moved = true;
            }
            while let Some(t) = self.principal.poll_transmit() {
                self.holder
                    .handle_message(self.now, principal_id.clone(), t.msg);
                moved = true;
            }
            while let Some(e) = self.holder.poll_event() {
                self.holder_events.push(e);
            }
            while let Some(e) = self.principal.poll_event() {
                self.principal_events.push(e);
            }
            if !moved {
                return;
            }
        }
    }

    /// Sends `op` from the principal; whether the holder's application got it. Checks
    /// that a refused request comes back as `Denied` at once.
    fn try_op(&mut self, op: Operation) -> bool {
        let holder = self.holder_id();
        let body = Multipart::from_frames([op.as_str()]);
        let request = match op {
            Operation::Request => Some(
                self.principal
                    .request(self.now, &holder, body, Duration::from_secs(5))
                    .unwrap(),
            ),
            Operation::Notify | Operation::Broadcast => {
                self.principal
                    .notify(&holder, body, op == Operation::Broadcast)
                    .unwrap();
                None
            }
            Operation::Connect | Operation::Forward => unreachable!(),
        };
        self.pump();
        let mut delivered = false;
        for event in std::mem::take(&mut self.holder_events) {
            match event {
                Event::Request { id, from, .. } => {
                    assert_eq!(op, Operation::Request);
                    assert_eq!(&from, &self.principal.config().local);
                    let principal = self.principal_id();
                    self.holder
                        .reply(&principal, id, Ok(Multipart::new()))
                        .unwrap();
                    delivered = true;
                }
                Event::Notification { broadcast, .. } => {
                    assert_eq!(broadcast, op == Operation::Broadcast);
                    delivered = true;
                }
                _ => {}
            }
        }
        self.pump();
        if let Some(id) = request {
            // Answered either way, within one round trip: no time has passed.
            let result = self
                .principal_events
                .drain(..)
                .find_map(|e| match e {
                    Event::Reply { id: got, result } if got == id => Some(result),
                    _ => None,
                })
                .expect("a reply within one round trip");
            if delivered {
                assert_eq!(result, Ok(Multipart::new()));
            } else {
                assert!(
                    matches!(
                        result,
                        Err(RequestError::Denied { ref service, op: Operation::Request, .. })
                            if *service == self.holder.config().local
                    ),
                    "{result:?}"
                );
            }
        }
        delivered
    }
}

fn world(cluster: &str, instance: &str) -> ServicePath {
    path(&format!("/demo/cn/android/w1/g1/{cluster}/{instance}"))
}

const MATRIX_POLICY: &str = "
# Lobbies anywhere in area cn may connect, request and notify the Battle cluster.
allow connect, request, notify from /demo/cn/*/*/*/Lobby to /demo/cn/android/w1/g1/Battle
# ...but lobby-9 may not notify anyone (deny overrides allow).
deny notify from /demo/cn/android/w1/g1/Lobby/lobby-9
# Clubs may connect to and notify battle-1 only.
allow connect,notify from /demo/cn/android/w1/g1/Club to /demo/cn/android/w1/g1/Battle/battle-1
# Admins may do everything everywhere, except mallory.
allow * from /demo/cn/android/w1/g1/Admin
deny * from /demo/cn/android/w1/g1/Admin/mallory
# Anyone may broadcast to battle-2.
allow broadcast from * to /demo/cn/android/w1/g1/Battle/battle-2
forward is reserved: parsed, not enforced
";

/// Principals × services × operations against one policy, through the protocol: deny
/// overriding allow, a missing rule denying, and `connect` at READY.
#[test]
fn acl_matrix_principals_services_operations() {
    let policy: AclPolicy = MATRIX_POLICY
        .lines()
        .filter(|l| !l.starts_with("forward"))
        .collect::<Vec<_>>()
        .join("\n")
        .parse()
        .unwrap();
    let lobby_1 = world("Lobby", "lobby-1");
    let lobby_eu = path("/demo/cn/ios/w7/g3/Lobby/lobby-1");
    let lobby_9 = world("Lobby", "lobby-9");
    let club = world("Club", "club-1");
    let admin = world("Admin", "admin-1");
    let mallory = world("Admin", "mallory");
    let trade = world("Trade", "trade-1");
    let battle_1 = world("Battle", "battle-1");
    let battle_2 = world("Battle", "battle-2");
    let guild = world("Guild", "guild-1");
    // (principal, service, allowed ops as c r n b, '-' for denied)
    let table: &[(&ServicePath, &ServicePath, &str)] = &[
        (&lobby_1, &battle_1, "crn-"),
        (&lobby_1, &battle_2, "crnb"),
        (&lobby_1, &guild, "----"),
        (&lobby_eu, &battle_1, "crn-"),
        (&lobby_9, &battle_1, "cr--"),
        (&lobby_9, &battle_2, "cr-b"),
        (&club, &battle_1, "c-n-"),
        (&club, &battle_2, "---b"),
        (&club, &guild, "----"),
        (&admin, &battle_1, "crnb"),
        (&admin, &guild, "crnb"),
        (&mallory, &battle_1, "----"),
        (&mallory, &battle_2, "----"),
        (&trade, &battle_1, "----"),
        (&trade, &battle_2, "---b"),
        (&trade, &guild, "----"),
    ];
    let ops = [
        Operation::Connect,
        Operation::Request,
        Operation::Notify,
        Operation::Broadcast,
    ];
    let mut cells = 0;
    for (principal, service, expected) in table {
        for (op, want) in ops.iter().zip(expected.chars()) {
            let allowed = want != '-';
            let case = format!("{op} from {principal} to {service}");
            assert_eq!(
                policy.decide(principal, service, *op).is_allowed(),
                allowed,
                "decide: {case}"
            );
            if *op == Operation::Connect {
                let duo = Duo::new(
                    (*service).clone(),
                    (*principal).clone(),
                    Some(policy.clone()),
                    false,
                );
                assert_eq!(duo.ready(), allowed, "connect: {case}");
                assert_eq!(
                    duo.holder.stats().acl_denied_connects,
                    u64::from(!allowed),
                    "{case}"
                );
                if !allowed {
                    let refused = duo.principal_events.iter().any(|e| {
                        matches!(e, Event::PeerLost {
                            reason: LossReason::Disconnected { reason, .. }, ..
                        } if reason.code == codes::ACCESS_DENIED
                            && reason.detail == format!("denied connect from {principal} to {service}"))
                    });
                    assert!(refused, "{case}: {:?}", duo.principal_events);
                }
            } else {
                // The holder dials, so the per-message check is what decides.
                let mut duo = Duo::new(
                    (*service).clone(),
                    (*principal).clone(),
                    Some(policy.clone()),
                    true,
                );
                assert!(duo.ready(), "{case}");
                assert_eq!(duo.try_op(*op), allowed, "{case}");
                let stats = duo.holder.stats();
                assert_eq!(stats.acl_denied, u64::from(!allowed), "{case}");
                let per_kind = if *op == Operation::Request {
                    stats.acl_denied_requests
                } else {
                    stats.acl_denied_notifications
                };
                assert_eq!(per_kind, u64::from(!allowed), "{case}");
            }
            cells += 1;
        }
    }
    assert_eq!(cells, table.len() * ops.len());
}

#[test]
fn no_policy_allows_everything_and_an_empty_policy_denies_everything() {
    for op in [Operation::Request, Operation::Notify, Operation::Broadcast] {
        let mut open = Duo::new(b_path(), a_path(), None, true);
        assert!(open.try_op(op), "{op} without a policy");
        let mut closed = Duo::new(b_path(), a_path(), Some(AclPolicy::deny_all()), true);
        assert!(!closed.try_op(op), "{op} with an empty policy");
        assert_eq!(closed.holder.stats().acl_denied, 1);
    }
    assert!(Duo::new(b_path(), a_path(), None, false).ready());
    assert!(!Duo::new(b_path(), a_path(), Some(AclPolicy::deny_all()), false).ready());
}

#[test]
fn denied_notifications_are_counted_and_the_session_stays_up() {
    let policy: AclPolicy = "allow connect,request from *".parse().unwrap();
    let mut duo = Duo::new(b_path(), a_path(), Some(policy), false);
    assert!(duo.ready());
    for _ in 0..3 {
        assert!(!duo.try_op(Operation::Notify));
        assert!(!duo.try_op(Operation::Broadcast));
    }
    assert!(duo.try_op(Operation::Request));
    let stats = duo.holder.stats();
    assert_eq!(stats.acl_denied_notifications, 6);
    assert_eq!(stats.acl_denied, 6);
    assert!(duo.ready());
}

#[test]
fn an_access_denied_reply_without_the_format_is_still_denied() {
    let mut duo = Duo::new(b_path(), a_path(), None, false);
    let id = duo
        .principal
        .request(
            duo.now,
            &b_path().peer_id(),
            Multipart::new(),
            Duration::from_secs(1),
        )
        .unwrap();
    duo.pump();
    let Some(Event::Request { id: got, .. }) = duo.holder_events.pop() else {
        panic!("{:?}", duo.holder_events)
    };
    let reason = Reason {
        code: codes::ACCESS_DENIED,
        detail: "go away".into(),
    };
    duo.holder
        .reply(&a_path().peer_id(), got, Err(reason))
        .unwrap();
    duo.pump();
    assert!(duo.principal_events.iter().any(|event| matches!(
        event,
        Event::Reply {
            id: got,
            result: Err(RequestError::Denied { service, op: Operation::Request, .. }),
        } if *got == id && *service == b_path()
    )));
}

// ---- PING rate limit --------------------------------------------------------------------

fn ping(seq: u64) -> Multipart {
    let a = a_path().peer_id();
    let control = Control::new(CommandCode::Ping, 0, seq, Body::Empty).encode();
    Multipart::from_frames([a.to_frame(), control])
}

fn pongs(proto: &mut Protocol) -> usize {
    let mut n = 0;
    while let Some(t) = proto.poll_transmit() {
        if Control::decode(&t.msg[1]).unwrap().command == CommandCode::Pong {
            n += 1;
        }
    }
    n
}

#[test]
fn pings_beyond_the_budget_are_not_answered_and_are_counted() {
    // A requester asking a 600 ms bound: the responder's default budget (10/s) applies.
    let mut pair = Pair::ready_with(|a| a.ping_interval = Duration::from_millis(200));
    let a = a_path().peer_id();
    let now = pair.now;
    let b = &mut pair.b.proto;
    let _ = pongs(b);
    for seq in 0..30 {
        b.handle_message(now, a.clone(), ping(seq));
    }
    // The bucket held the burst (20, minus what the healthy PINGs before took back).
    let answered = pongs(b);
    assert!((19..=20).contains(&answered), "{answered}");
    assert_eq!(b.stats().pings_dropped, 30 - answered as u64);
    // A second refills 10.
    let later = now + Duration::from_secs(1);
    for seq in 0..15 {
        b.handle_message(later, a.clone(), ping(seq));
    }
    assert_eq!(pongs(b), 10);
    assert_eq!(b.session_state(&a), Some(SessionState::Ready));
    assert_eq!(b.stats().ping_floods, 0);
}

#[test]
fn a_ping_flood_ends_the_session_with_rate_limited() {
    let mut pair = Pair::ready();
    let a = a_path().peer_id();
    let now = pair.now;
    for seq in 0..200 {
        pair.b.proto.handle_message(now, a.clone(), ping(seq));
    }
    pair.collect();
    let stats = pair.b.proto.stats();
    assert_eq!(stats.ping_floods, 1);
    assert_eq!(pair.b.proto.session_state(&a), None);
    assert!(
        matches!(lost(&pair.b.events), Some(LossReason::ProtocolViolation(d)) if d.contains("PING flood")),
        "{:?}",
        pair.b.events
    );
    pair.drive_for(Duration::from_millis(20));
    match lost(&pair.a.events) {
        Some(LossReason::Disconnected {
            initiator: Initiator::Remote,
            reason,
        }) => assert_eq!(reason.code, codes::RATE_LIMITED),
        other => panic!("{other:?}"),
    }
}

#[test]
fn heartbeats_at_the_budget_are_never_throttled() {
    // The requester pings every 100 ms: exactly the default 10/s.
    let mut pair = Pair::ready();
    pair.drive_for(Duration::from_secs(10));
    assert!(lost(&pair.a.events).is_none());
    assert_eq!(pair.b.proto.stats().pings_dropped, 0);
}

#[test]
fn a_requester_with_faster_heartbeats_than_the_responder_is_never_throttled() {
    // 30 ms × 3 against a responder that pings every second itself: its budget follows
    // the 90 ms bound the requester asked for, not its own rate.
    let mut pair = Pair::ready_with(|a| a.ping_interval = Duration::from_millis(30));
    pair.drive_for(Duration::from_secs(5));
    assert!(lost(&pair.a.events).is_none(), "{:?}", pair.a.events);
    assert!(lost(&pair.b.events).is_none(), "{:?}", pair.b.events);
    assert_eq!(pair.b.proto.stats().pings_dropped, 0);
}

#[test]
fn slow_pings_over_a_long_time_are_never_a_flood() {
    // 30 PINGs a second: 20 a second over budget, never 100 within a window.
    let mut pair = Pair::ready_with(|a| a.ping_interval = Duration::from_millis(200));
    let a = a_path().peer_id();
    let start = pair.now;
    for i in 0..300u32 {
        let at = start + Duration::from_millis(u64::from(i) * 33);
        pair.b
            .proto
            .handle_message(at, a.clone(), ping(u64::from(i)));
    }
    assert_eq!(pair.b.proto.session_state(&a), Some(SessionState::Ready));
    assert!(pair.b.proto.stats().pings_dropped > 100);
    assert_eq!(pair.b.proto.stats().ping_floods, 0);
}

#[test]
fn a_resumed_process_does_not_condemn_peers_whose_messages_wait_unread() {
    let mut pair = Pair::ready();
    // Up to just after the requester's first PING left: it is on the wire.
    let start = pair.now;
    while !pair.wire.iter().any(|(_, to_b, _)| *to_b) && pair.now < start + Duration::from_secs(1) {
        pair.drive_for(Duration::from_millis(1));
        pair.collect();
    }
    assert!(
        pair.wire.iter().any(|(_, to_b, _)| *to_b),
        "a PING is on its way to the responder"
    );
    // Both sides stop running for 3 s (a SIGSTOP, a VM pause): no timer, no read; the
    // PING waits for the responder, unread.
    pair.now += Duration::from_secs(3);
    // On resume the responder's timer happens to run before its reads.
    pair.b.proto.handle_timeout(pair.now);
    pair.a.proto.handle_timeout(pair.now);
    pair.drive_for(Duration::from_secs(2));
    pair.collect();
    assert_eq!(lost(&pair.a.events), None, "the requester kept its session");
    assert_eq!(lost(&pair.b.events), None, "the responder kept its session");
    assert_eq!(pair.b.proto.stats().pauses, 1);
    assert_eq!(pair.a.proto.stats().pauses, 1);
}

#[test]
fn a_peer_that_died_during_a_pause_is_still_declared_dead_one_interval_later() {
    let mut pair = Pair::ready();
    pair.drop_a_to_b = true;
    pair.now += Duration::from_secs(3);
    let resumed = pair.now;
    pair.b.proto.handle_timeout(pair.now);
    assert_eq!(
        lost(&pair.b.events),
        None,
        "no verdict on the stale silence"
    );
    while lost(&pair.b.events).is_none() && pair.now < resumed + Duration::from_secs(2) {
        pair.drive_for(Duration::from_millis(5));
        pair.collect();
    }
    let after = pair.now - resumed;
    // The grace (the responder's ping interval, at most half the 300 ms bound: 150 ms),
    // plus a step: not a whole bound again.
    assert!(
        after >= Duration::from_millis(150) && after <= Duration::from_millis(160),
        "declared dead {after:?} after the resume"
    );
    assert!(
        matches!(
            lost(&pair.b.events),
            Some(LossReason::HeartbeatTimeout { .. })
        ),
        "{:?}",
        pair.b.events
    );
}

#[test]
fn a_process_that_keeps_running_late_still_declares_a_dead_peer_dead() {
    let mut pair = Pair::ready();
    pair.drop_a_to_b = true;
    // Every tick of the responder comes 1 s late (a runtime starved for good): the first
    // excuses the silence, the next ones do not excuse it again.
    let mut ticks = 0;
    while lost(&pair.b.events).is_none() && ticks < 5 {
        let due = pair.b.proto.poll_timeout().expect("a session deadline");
        pair.now = pair.now.max(due) + Duration::from_secs(1);
        pair.b.proto.handle_timeout(pair.now);
        pair.collect();
        ticks += 1;
    }
    assert!(
        matches!(
            lost(&pair.b.events),
            Some(LossReason::HeartbeatTimeout { .. })
        ),
        "the dead requester declared dead after {ticks} late ticks: {:?}",
        pair.b.events
    );
    assert_eq!(ticks, 2, "one excused tick, then the verdict");
}

#[test]
fn a_request_that_could_not_be_sent_fails_at_once_and_never_times_out() {
    let mut pair = Pair::ready();
    let b = b_path().peer_id();
    let id = pair
        .a
        .proto
        .request(
            pair.now,
            &b,
            Multipart::from_frames(["x"]),
            Duration::from_millis(50),
        )
        .unwrap();
    // The caller takes the REQ and cannot hand it to the middleware.
    let transmit = pair.a.proto.poll_transmit().unwrap();
    assert_eq!(transmit.msg.frames().len(), 3);
    assert!(pair.a.proto.fail_unsent(id, "link full"));
    assert!(!pair.a.proto.fail_unsent(id, "twice"), "only once");
    assert_eq!(pair.a.proto.pending_for(&b), 0);
    assert_eq!(
        pair.a.proto.poll_event(),
        Some(Event::Reply {
            id,
            result: Err(RequestError::NotSent("link full".into()))
        })
    );
    pair.drive_for(Duration::from_millis(200));
    assert!(
        !pair
            .a
            .events
            .iter()
            .any(|e| matches!(e, Event::Reply { id: got, .. } if *got == id)),
        "no timeout follows: {:?}",
        pair.a.events
    );
    assert!(
        !pair
            .b
            .events
            .iter()
            .any(|e| matches!(e, Event::Request { .. })),
        "nothing reached the peer"
    );
}
