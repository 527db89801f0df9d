//! A deterministic two-node simulator: two [`Protocol`]s, a virtual clock, per-direction
//! latency and loss. No sockets, no real time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::control::{Body, CommandCode, Control, Reason, codes};
use super::*;
use crate::path::{ClusterPath, ServicePath};
use crate::{Multipart, PeerId, Role};

const LATENCY: Duration = Duration::from_millis(5);

/// The origin of the virtual clock: the only real clock read; time then only moves when
/// the simulator moves it.
#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

struct Node {
    proto: Protocol,
    events: Vec<Event>,
}

/// Requester `a` connected to responder `b`.
struct Pair {
    now: Instant,
    a: Node,
    b: Node,
    /// In flight: (delivery time, to_b, message).
    wire: VecDeque<(Instant, bool, Multipart)>,
    /// Drop every message from a to b / b to a while set.
    drop_a_to_b: bool,
    drop_b_to_a: bool,
}

fn path(s: &str) -> ServicePath {
    s.parse().unwrap()
}

fn a_path() -> ServicePath {
    path("/demo/cn/android/w1/g1/Lobby/lobby-1")
}

fn b_path() -> ServicePath {
    path("/demo/cn/android/w1/g1/Battle/battle-1")
}

impl Pair {
    fn new(b_config: impl FnOnce(&mut ProtoConfig)) -> Self {
        let now = epoch();
        let mut a = ProtoConfig::new(a_path());
        a.ping_interval = Duration::from_millis(100);
        a.missed_pongs = 3;
        let mut b = ProtoConfig::new(b_path());
        b_config(&mut b);
        let mut pair = Self {
            now,
            a: Node {
                proto: Protocol::new(a),
                events: Vec::new(),
            },
            b: Node {
                proto: Protocol::new(b),
                events: Vec::new(),
            },
            wire: VecDeque::new(),
            drop_a_to_b: false,
            drop_b_to_a: false,
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
        let mut pair = Self::new(|_| {});
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
        pair.a.events.clear();
        pair.b.events.clear();
        pair
    }

    fn collect(&mut self) {
        while let Some(t) = self.a.proto.poll_transmit() {
            assert_eq!(t.msg[0], t.to.to_frame());
            check_urgency(&t);
            if !self.drop_a_to_b {
                self.wire.push_back((self.now + LATENCY, true, t.msg));
            }
        }
        while let Some(t) = self.b.proto.poll_transmit() {
            check_urgency(&t);
            if !self.drop_b_to_a {
                self.wire.push_back((self.now + LATENCY, false, t.msg));
            }
        }
        while let Some(e) = self.a.proto.poll_event() {
            self.a.events.push(e);
        }
        while let Some(e) = self.b.proto.poll_event() {
            self.b.events.push(e);
        }
    }

    /// Runs the simulation until `now + span`, jumping from event to event.
    fn drive_for(&mut self, span: Duration) {
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
                    self.b
                        .proto
                        .handle_message(self.now, a_path().peer_id(), msg);
                } else {
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
    let mut pair = Pair::new(|b| b.acl = Some(vec![allowed]));
    pair.drive_for(Duration::from_millis(50));
    match lost(&pair.a.events) {
        Some(LossReason::Disconnected {
            initiator: Initiator::Remote,
            reason,
        }) => {
            assert_eq!(reason.code, codes::ACCESS_DENIED);
            assert!(reason.detail.contains("/Lobby"), "{}", reason.detail);
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
