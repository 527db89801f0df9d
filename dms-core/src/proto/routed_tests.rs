//! Routed REQs (docs/PROTOCOL.md §3.5) at one protocol instance: what it delivers, hands
//! on, and refuses, and why.

use std::time::{Duration, Instant};

use super::control::{Body, CommandCode, Control, ControlError, Route, capabilities, codes, flags};
use super::*;
use crate::acl::AclPolicy;
use crate::path::ServicePath;
use crate::{Multipart, Role};

fn path(name: &str) -> ServicePath {
    format!("/demo/cn/android/w1/g1/{name}").parse().unwrap()
}

/// The origin, a broker, a service that does not forward, and the destination.
fn lobby() -> ServicePath {
    path("Lobby/lobby-1")
}
fn broker() -> ServicePath {
    path("Broker/broker-1")
}
fn trade() -> ServicePath {
    path("Trade/trade-1")
}

#[allow(clippy::disallowed_methods)] // the one clock read: the tests' epoch
fn epoch() -> Instant {
    Instant::now()
}

/// `local` with a ready session from `peer` (which announced `caps` in its READY).
fn session(
    local: ServicePath,
    peer: &ServicePath,
    caps: u32,
    configure: impl FnOnce(&mut ProtoConfig),
) -> Protocol {
    let mut config = ProtoConfig::new(local);
    configure(&mut config);
    let mut proto = Protocol::new(config);
    let now = epoch();
    proto.handle_link_up(now, peer.peer_id(), Role::Acceptor);
    let ready = Control::new(
        CommandCode::Ready,
        0,
        0,
        Body::Ready {
            path: peer.to_string(),
            liveness_timeout_ms: 3000,
            capabilities: caps,
        },
    );
    proto.handle_message(
        now,
        peer.peer_id(),
        Multipart::from_frames([peer.peer_id().to_frame(), ready.encode()]),
    );
    assert!(matches!(proto.poll_event(), Some(Event::PeerReady { .. })));
    while proto.poll_transmit().is_some() {}
    proto
}

fn routed_req(from: &ServicePath, route: Route, id: u64, hop_limit: u8) -> Multipart {
    let mut control = Control::new(CommandCode::Req, flags::EXPECT_REPLY, id, Body::Empty)
        .with_route(Some(route));
    control.hop_limit = hop_limit;
    Multipart::from_frames([
        from.peer_id().to_frame(),
        control.encode(),
        "payload".into(),
    ])
}

fn route(origin: ServicePath, destination: ServicePath) -> Route {
    Route {
        origin,
        destination,
    }
}

/// The error REP `proto` sent, if any: (id, code, detail).
fn error_reply(proto: &mut Protocol) -> Option<(u64, u16, String)> {
    let sent = proto.poll_transmit()?;
    let control = Control::decode(&sent.msg[1]).unwrap();
    assert_eq!(control.command, CommandCode::Rep);
    match control.body {
        Body::Reason(reason) => Some((control.id, reason.code, reason.detail)),
        _ => None,
    }
}

#[test]
fn a_request_for_us_is_delivered_as_coming_from_its_origin() {
    let mut trade_side = session(trade(), &broker(), capabilities::FORWARDS, |_| {});
    trade_side.handle_message(
        epoch(),
        broker().peer_id(),
        routed_req(&broker(), route(lobby(), trade()), 7, 14),
    );
    match trade_side.poll_event() {
        Some(Event::Request {
            peer,
            from,
            id,
            body,
            ..
        }) => {
            assert_eq!(
                peer,
                broker().peer_id(),
                "the reply goes back to the adjacent hop"
            );
            assert_eq!(from, lobby());
            assert_eq!(id, RequestId(7));
            assert_eq!(&body[0][..], b"payload");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_broker_hands_on_what_is_not_for_it() {
    let mut broker_side = session(broker(), &lobby(), 0, |c| c.forwards = true);
    broker_side.handle_message(
        epoch(),
        lobby().peer_id(),
        routed_req(&lobby(), route(lobby(), trade()), 9, 16),
    );
    match broker_side.poll_event() {
        Some(Event::Forward { peer, id, message }) => {
            assert_eq!(peer, lobby().peer_id());
            assert_eq!(id, RequestId(9));
            assert_eq!(message.route, route(lobby(), trade()));
            assert_eq!(message.hop_limit, 16);
            assert!(message.expects_reply());
        }
        other => panic!("{other:?}"),
    }
    // READY of a broker announces it.
    let mut fresh = Protocol::new({
        let mut c = ProtoConfig::new(broker());
        c.forwards = true;
        c
    });
    fresh.handle_link_up(epoch(), trade().peer_id(), Role::Connector);
    let ready = Control::decode(&fresh.poll_transmit().unwrap().msg[1]).unwrap();
    assert!(
        matches!(ready.body, Body::Ready { capabilities: caps, .. } if caps & capabilities::FORWARDS != 0)
    );
}

#[test]
fn an_instance_that_does_not_forward_answers_unreachable() {
    let mut plain = session(trade(), &lobby(), 0, |_| {});
    plain.handle_message(
        epoch(),
        lobby().peer_id(),
        routed_req(&lobby(), route(lobby(), path("Guild/guild-1")), 3, 16),
    );
    let (id, code, detail) = error_reply(&mut plain).expect("an error reply");
    assert_eq!((id, code), (3, codes::UNREACHABLE));
    assert!(detail.contains("does not forward"), "{detail}");
    assert_eq!(plain.stats().not_forwarded, 1);
    assert!(plain.poll_event().is_none());
}

#[test]
fn a_forged_origin_is_refused_at_the_first_hop() {
    // Lobby does not forward, yet claims to relay for trade-1.
    let mut broker_side = session(broker(), &lobby(), 0, |c| c.forwards = true);
    broker_side.handle_message(
        epoch(),
        lobby().peer_id(),
        routed_req(&lobby(), route(trade(), path("Guild/guild-1")), 4, 16),
    );
    let (_, code, detail) = error_reply(&mut broker_side).expect("an error reply");
    assert_eq!(code, codes::ACCESS_DENIED);
    assert!(detail.contains("does not forward"), "{detail}");
    assert_eq!(broker_side.stats().forged_origins, 1);
    assert!(broker_side.poll_event().is_none());
}

#[test]
fn the_acl_applies_to_the_origin_not_to_the_broker() {
    // Trade lets the broker forward and lobby request; it denies guild.
    let policy: AclPolicy = "allow connect,forward from /demo/cn/android/w1/g1/Broker\nallow request from /demo/cn/android/w1/g1/Lobby"
        .parse()
        .unwrap();
    let mut trade_side = session(trade(), &broker(), capabilities::FORWARDS, |c| {
        c.acl = Some(policy)
    });
    trade_side.handle_message(
        epoch(),
        broker().peer_id(),
        routed_req(&broker(), route(lobby(), trade()), 1, 14),
    );
    assert!(
        matches!(trade_side.poll_event(), Some(Event::Request { from, .. }) if from == lobby())
    );
    // The broker does not launder a denied origin.
    trade_side.handle_message(
        epoch(),
        broker().peer_id(),
        routed_req(&broker(), route(path("Guild/guild-1"), trade()), 2, 14),
    );
    let (id, code, detail) = error_reply(&mut trade_side).expect("refused");
    assert_eq!((id, code), (2, codes::ACCESS_DENIED));
    assert!(
        detail.contains("denied request from /demo/cn/android/w1/g1/Guild/guild-1"),
        "{detail}"
    );
    assert!(trade_side.poll_event().is_none());
}

#[test]
fn relaying_needs_the_forward_operation() {
    // Trade lets the broker connect and request, not forward.
    let policy: AclPolicy = "allow connect,request from /demo/cn/android/w1/g1/Broker\nallow request from /demo/cn/android/w1/g1/Lobby"
        .parse()
        .unwrap();
    let mut trade_side = session(trade(), &broker(), capabilities::FORWARDS, |c| {
        c.acl = Some(policy)
    });
    trade_side.handle_message(
        epoch(),
        broker().peer_id(),
        routed_req(&broker(), route(lobby(), trade()), 5, 14),
    );
    let (_, code, detail) = error_reply(&mut trade_side).expect("refused");
    assert_eq!(code, codes::ACCESS_DENIED);
    assert!(
        detail.starts_with("denied forward from /demo/cn/android/w1/g1/Broker/broker-1"),
        "{detail}"
    );
    // And a broker forwards only for origins allowed to `forward` through it.
    let policy: AclPolicy = "allow connect,request from *".parse().unwrap();
    let mut broker_side = session(broker(), &lobby(), 0, |c| {
        c.forwards = true;
        c.acl = Some(policy);
    });
    broker_side.handle_message(
        epoch(),
        lobby().peer_id(),
        routed_req(&lobby(), route(lobby(), trade()), 6, 16),
    );
    let (_, code, detail) = error_reply(&mut broker_side).expect("refused");
    assert_eq!(code, codes::ACCESS_DENIED);
    assert!(
        detail.starts_with("denied forward from /demo/cn/android/w1/g1/Lobby/lobby-1"),
        "{detail}"
    );
}

#[test]
fn bad_forwarding_fields_are_a_protocol_violation() {
    let good = routed_req(&lobby(), route(lobby(), trade()), 1, 16);
    let frame = good[1].to_vec();
    // The header's destination hash no longer matches the destination entry.
    let mut wrong_hash = frame.clone();
    wrong_hash[27] ^= 1;
    assert_eq!(
        Control::decode(&wrong_hash),
        Err(ControlError::BadRoute(
            "forwarding path does not match its header hash"
        ))
    );
    // A destination hash and no entries.
    let mut bare = Control::new(CommandCode::Req, 0, 0, Body::Empty);
    bare.destination = trade().hash64();
    assert_eq!(
        Control::decode(&bare.encode()),
        Err(ControlError::BadRoute(
            "routed request without an origin entry"
        ))
    );
    // The session pays, not the process.
    let mut broker_side = session(broker(), &lobby(), 0, |c| c.forwards = true);
    broker_side.handle_message(
        epoch(),
        lobby().peer_id(),
        Multipart::from_frames([lobby().peer_id().to_frame(), wrong_hash.into()]),
    );
    assert!(matches!(
        broker_side.poll_event(),
        Some(Event::PeerLost { .. })
    ));
}

#[test]
fn forwarding_carries_the_hop_limit_and_correlates_the_reply() {
    let mut broker_side = session(broker(), &trade(), 0, |c| c.forwards = true);
    let now = epoch();
    let message = Routed {
        flags: flags::EXPECT_REPLY,
        route: route(lobby(), trade()),
        hop_limit: 15,
        body: Multipart::from_frames(["x"]),
        trace: None,
    };
    let id = broker_side
        .forward(now, &trade().peer_id(), message, Duration::from_secs(1))
        .unwrap()
        .expect("an id: it expects a reply");
    let sent = broker_side.poll_transmit().unwrap();
    let control = Control::decode(&sent.msg[1]).unwrap();
    assert_eq!((control.hop_limit, control.id), (15, id.0));
    assert_eq!(control.source, lobby().hash64());
    assert_eq!(control.destination, trade().hash64());
    let rep = Control::new(CommandCode::Rep, 0, id.0, Body::Empty);
    broker_side.handle_message(
        now,
        trade().peer_id(),
        Multipart::from_frames([trade().peer_id().to_frame(), rep.encode(), "ok".into()]),
    );
    assert!(
        matches!(broker_side.poll_event(), Some(Event::Reply { id: got, result: Ok(_) }) if got == id)
    );
    // A notification needs no id.
    let note = Routed {
        flags: 0,
        route: route(lobby(), trade()),
        hop_limit: 15,
        body: Multipart::from_frames(["x"]),
        trace: None,
    };
    assert_eq!(
        broker_side.forward(now, &trade().peer_id(), note, Duration::ZERO),
        Ok(None)
    );
}
