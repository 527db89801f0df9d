//! Entry points of the fuzz targets in `fuzz/`, kept here so that the targets are one-liners
//! and the corpus replay test (run on stable in the test suite) exercises the same code.

use bytes::{Bytes, BytesMut};

use crate::wire::{Handshake, HandshakeConfig, Inbound, Limits, MessageCodec};

/// Limits small enough for a fuzzer to hit every bound.
fn fuzz_limits(selector: u8) -> Limits {
    Limits::builder()
        .max_frame_len(u64::from(selector & 0x3F) * 16 + 1)
        .max_frames_per_message(usize::from(selector >> 6) + 1)
        .max_message_len(600)
        .build()
}

/// Chunk sizes to feed input in, so that every split point is reachable.
fn chunk_len(selector: u8) -> usize {
    usize::from(selector % 17) + 1
}

/// Feeds `data` to a [`MessageCodec`] in chunks; every decoded message is re-encoded and
/// decoded again and must come back equal. Panics only on a bug.
pub fn exercise_wire_decode(data: &[u8]) {
    let [limits_sel, chunk_sel, rest @ ..] = data else {
        return;
    };
    let limits = fuzz_limits(*limits_sel);
    let mut codec = MessageCodec::new(limits);
    let mut buf = BytesMut::new();
    for chunk in rest.chunks(chunk_len(*chunk_sel)) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(Inbound::Message(msg))) => {
                    let mut again = BytesMut::new();
                    let mut echo = MessageCodec::new(limits);
                    echo.encode(&msg, &mut again)
                        .expect("a decoded message is within the limits");
                    assert_eq!(
                        echo.decode(&mut again),
                        Ok(Some(Inbound::Message(msg))),
                        "re-encoded message decodes to itself"
                    );
                }
                Ok(Some(Inbound::Command(_))) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// Feeds `data` to a [`Handshake`] in chunks, then (if it completes) the rest to a
/// [`MessageCodec`]. Panics only on a bug.
pub fn exercise_handshake(data: &[u8]) {
    let [limits_sel, chunk_sel, rest @ ..] = data else {
        return;
    };
    let config = HandshakeConfig {
        limits: fuzz_limits(*limits_sel),
        ..HandshakeConfig::default()
    };
    let mut handshake = Handshake::new(config.clone());
    let mut out = BytesMut::new();
    assert!(handshake.poll_transmit(&mut out));
    let mut buf = BytesMut::new();
    let mut codec: Option<MessageCodec> = None;
    for chunk in rest.chunks(chunk_len(*chunk_sel)) {
        buf.extend_from_slice(chunk);
        if let Some(codec) = codec.as_mut() {
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
            continue;
        }
        match handshake.handle_bytes(&mut buf) {
            Ok(Some(info)) => {
                assert!(info.identity.len() <= 255);
                codec = Some(MessageCodec::new(config.limits));
            }
            Ok(None) => {}
            Err(_) => return,
        }
    }
}

/// The control frame decoder on arbitrary bytes: it never panics, and what decodes
/// re-encodes to a frame that decodes to the same value (`decode(encode(x)) == x`). Then
/// the same bytes, cut into messages, are fed to a [`Protocol`](crate::proto::Protocol)
/// responder whose peer is a requester (the peer state machine on hostile input): it never
/// panics, and nothing reaches the application before the session is Ready. Panics only on
/// a bug.
pub fn exercise_control_frame(data: &[u8]) {
    use crate::proto::control::Control;

    if let Ok(control) = Control::decode(data) {
        let encoded = control.encode();
        assert_eq!(
            Control::decode(&encoded),
            Ok(control),
            "a decoded control frame re-encodes to itself"
        );
        assert!(encoded.len() <= data.len(), "encoding adds nothing");
    }
    exercise_protocol(data);
}

/// Cuts `data` into messages (`[len][control frame][frames][payload lens...]`, see below)
/// and hands them to a responder with one session.
fn exercise_protocol(data: &[u8]) {
    use std::time::Duration;

    use crate::proto::control::{Body, CommandCode, Control};
    use crate::proto::{Event, ProtoConfig, Protocol, SessionState};
    use crate::{Multipart, Role};

    // Parsing a constant cannot fail; a fuzz entry point has no caller to report to.
    let Ok(local) = "/fuzz/cn/android/w1/g1/Battle/battle-1".parse() else {
        return;
    };
    let Ok(remote) = "/fuzz/cn/android/w1/g1/Lobby/lobby-1".parse::<crate::path::ServicePath>()
    else {
        return;
    };
    let peer = remote.peer_id();
    #[allow(clippy::disallowed_methods)] // the virtual clock's origin
    let mut now = std::time::Instant::now();
    let mut proto = Protocol::new(ProtoConfig::new(local));
    proto.handle_link_up(now, peer.clone(), Role::Acceptor);
    let mut rest = data;
    let mut ready = false;
    // Each message: one byte of flags (bit 0: the peer's valid READY first; bits 1-2:
    // payload frames; bits 3-7: milliseconds to advance the clock), one byte of length,
    // then that many bytes of control frame.
    while let [selector, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (frame, next) = tail.split_at(len);
        rest = next;
        if selector & 1 != 0 && !ready {
            let hello = Control::new(
                CommandCode::Ready,
                0,
                0,
                Body::Ready {
                    path: remote.as_str().to_owned(),
                    liveness_timeout_ms: 1000,
                    capabilities: 0,
                },
            );
            proto.handle_message(
                now,
                peer.clone(),
                Multipart::from_frames([peer.to_frame(), hello.encode()]),
            );
        }
        let mut msg = Multipart::from_frames([peer.to_frame(), Bytes::copy_from_slice(frame)]);
        for i in 0..(selector >> 1) & 3 {
            msg.push(Bytes::from(vec![i; usize::from(i)]));
        }
        now += Duration::from_millis(u64::from(selector >> 3));
        proto.handle_message(now, peer.clone(), msg);
        proto.handle_timeout(now);
        while proto.poll_transmit().is_some() {}
        while let Some(event) = proto.poll_event() {
            match event {
                Event::PeerReady { .. } => ready = true,
                Event::Request { .. } | Event::Notification { .. } => {
                    assert!(ready, "nothing reaches the application before READY");
                }
                Event::PeerLost { .. } => ready = false,
                _ => {}
            }
        }
        if proto.session_state(&peer) != Some(SessionState::Ready) {
            ready = false;
            if proto.session_state(&peer).is_none() {
                proto.handle_link_up(now, peer.clone(), Role::Acceptor);
            }
        }
    }
}

/// The path and ACL parsers on arbitrary text: they never panic, and what parses prints
/// back to text that parses to the same value (`parse(display(x)) == x`): service and
/// cluster paths, ACL patterns, whole ACL policies (from bytes, so non-UTF-8 is covered),
/// endpoints. Panics only on a bug.
pub fn exercise_service_path(data: &[u8]) {
    use crate::acl::{AclPolicy, Operation, Pattern};
    use crate::endpoint::Endpoint;
    use crate::path::{ClusterPath, ServicePath};

    let policy = AclPolicy::parse_bytes(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(path) = ServicePath::new(text) {
        assert_eq!(path.to_string().parse::<ServicePath>().as_ref(), Ok(&path));
        let cluster = path.cluster();
        assert_eq!(
            cluster.to_string().parse::<ClusterPath>().as_ref(),
            Ok(&cluster)
        );
        assert!(cluster.contains(&path));
        assert_eq!(cluster.instance(path.instance()).as_ref(), Ok(&path));
        assert_eq!(path.hash64(), crate::path::hash64(text.as_bytes()));
        assert!(Pattern::from(&path).matches(&path));
        assert!(Pattern::from(&cluster).matches(&path));
        if let Ok(policy) = &policy {
            let _ = policy.permitted(&path, &path);
            let _ = policy.connect_principals(&path);
        }
    }
    if let Ok(cluster) = ClusterPath::new(text) {
        assert_eq!(
            cluster.to_string().parse::<ClusterPath>().as_ref(),
            Ok(&cluster)
        );
    }
    for line in text.lines().take(64) {
        if let Ok(pattern) = line.parse::<Pattern>() {
            assert_eq!(
                line.parse::<Pattern>().map(|p| p.to_string()),
                Ok(pattern.to_string())
            );
            assert_eq!(
                pattern.to_string().parse::<Pattern>().as_ref(),
                Ok(&pattern)
            );
        }
        if let Ok(endpoint) = line.parse::<Endpoint>() {
            assert_eq!(
                endpoint.to_string().parse::<Endpoint>().as_ref(),
                Ok(&endpoint)
            );
        }
        let _ = line.parse::<Operation>();
    }
    if let Ok(policy) = policy {
        let again = policy.to_string().parse::<AclPolicy>();
        assert_eq!(
            again.as_ref(),
            Ok(&policy),
            "a policy prints back to itself"
        );
    }
}
